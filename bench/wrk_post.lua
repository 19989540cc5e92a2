-- wrk script for Clarion's benchmark: the same POST against every target.
--
-- Configured through the environment (set by bench/loadgen.py):
--   BENCH_PATH, BENCH_BODY, BENCH_AUTH   the request
--   BENCH_RATE      if > 0: pace the whole run to about this many requests/s (per wrk thread)
--   BENCH_IDS       if set: a file to write "<notification_id> <accepted epoch s> <sent epoch s>"
--                   lines to, one per 2xx answer (the start of end-to-end delivery latency); the
--                   send time travels as X-Request-ID, which Clarion echoes
--   BENCH_RESULT    the file done() writes its JSON summary to
-- Counts 2xx answers itself (wrk only counts status > 399 as errors).

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/notifications"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end

local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local record_ids = (os.getenv("BENCH_IDS") or "") ~= ""

-- setup/done run in their own Lua state: keep the thread handles to collect results.
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- Per-thread state (each wrk thread runs its own copy of this script).
ok2xx = 0
non2xx = 0
statuses = {}
ids = {}
local next_slot = nil

function init(args)
  -- Pre-build the request once: wrk.format on every request costs CPU we are measuring with.
  req = wrk.format()
end

if record_ids then
  -- Each request carries its send time as X-Request-ID; Clarion echoes it on the answer, so the
  -- response hook knows when that very request was sent (the start of end-to-end latency).
  -- wrk.format replaces wrk.headers with the table it is given: pass a copy plus our header.
  local headers = {}
  function request()
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers["X-Request-ID"] = string.format("bench-%.6f", now())
    return wrk.format(nil, nil, headers)
  end
else
  function request()
    return req
  end
end

if rate > 0 then
  -- Open-loop-ish pacing: one send slot every 1/rate s for this thread, whichever connection
  -- is free takes it. wrk starts the latency clock after the delay, so latency excludes it.
  function delay()
    local t = now()
    if next_slot == nil then next_slot = t end
    next_slot = next_slot + 1.0 / rate
    local wait = (next_slot - t) * 1000.0
    if wait < 0 then return 0 end
    return math.floor(wait)
  end
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
    if record_ids then
      local id = body and body:match('"notification_id"%s*:%s*"([%w%-]+)"')
      local rid = headers["x-request-id"] or headers["X-Request-ID"] or ""
      local sent = rid:match("^bench%-([%d%.]+)$") or "0"
      if id then ids[#ids + 1] = id .. " " .. string.format("%.6f", now()) .. " " .. sent end
    end
  else
    non2xx = non2xx + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function done(summary, latency, requests)
  local ok, bad, by_status = 0, 0, {}
  local out_ids = os.getenv("BENCH_IDS") or ""
  local f_ids = nil
  if out_ids ~= "" then f_ids = assert(io.open(out_ids, "w")) end
  for _, thread in ipairs(threads) do
    ok = ok + (thread:get("ok2xx") or 0)
    bad = bad + (thread:get("non2xx") or 0)
    local st = thread:get("statuses") or {}
    for k, v in pairs(st) do by_status[k] = (by_status[k] or 0) + v end
    if f_ids then
      local t_ids = thread:get("ids") or {}
      for _, line in ipairs(t_ids) do f_ids:write(line, "\n") end
    end
  end
  if f_ids then f_ids:close() end
  local parts = {}
  for k, v in pairs(by_status) do parts[#parts + 1] = json_string(k) .. ":" .. v end
  local e = summary.errors
  local result = string.format(
    '{"tool":"wrk","duration_s":%.6f,"requests":%d,"ok2xx":%d,"non2xx":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"mean":%.3f,"max":%.3f}}',
    summary.duration / 1e6, summary.requests, ok, bad, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000, latency.max / 1000)
  local path = os.getenv("BENCH_RESULT")
  if path and path ~= "" then
    local f = assert(io.open(path, "w"))
    f:write(result, "\n")
    f:close()
  else
    io.write(result, "\n")
  end
end
