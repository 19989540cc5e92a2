"""Turning a run's figures into a table (terminal and Markdown), a JSON file and a plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

TARGETS = ("clarion", "reference", "ceiling")
LABELS = {"clarion": "Clarion", "reference": "plain async reference", "ceiling": "HTTP ceiling"}


def percentiles(values: list[float], wanted: tuple[float, ...] = (50, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of `values` (ms or s, as given), rounded; {} when empty."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in wanted:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p:g}"] = round(ordered[rank - 1], 2)
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |",
            "| " + " | ".join("---" for _ in headers) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(results: dict[str, Any]) -> str:
    """The run's figures as Markdown tables (also printed to the terminal)."""
    lines: list[str] = []
    main = results.get("main", {})
    conns = results.get("plan", {}).get("connections")
    lines.append(f"### POST /v1/notifications, {conns} connections, "
                 f"{results.get('plan', {}).get('duration')} s each")
    lines.append("")
    meta = results.get("meta", {})
    if meta.get("clarion_code_changed_during_run"):
        lines += ["**Clarion's source changed during this run.**", ""]
    busy = [p.get("other_processes", 0)
            for t in TARGETS for p in results.get("sweep", {}).get(t, [])]
    if any(busy):
        shared = (f"**The machine was shared**: other test or Clarion processes were running"
                  f" during {sum(1 for b in busy if b)} of {len(busy)} sweep points (column"
                  " 'other test processes'); those figures are low and noisy.")
        lines += [shared, ""]
    rows = []
    for target in TARGETS:
        point = main.get(target)
        if not point:
            continue
        lat = point["latency_ms"]
        rows.append([LABELS[target], _fmt(point["accepted_per_s"], 0), _fmt(lat["p50"], 2),
                     _fmt(lat["p99"], 2), _fmt(point["non2xx"]),
                     _fmt(sum(point["errors"].values()) - point["errors"].get("status", 0)),
                     _fmt(point.get("server_cpu_cores"), 2)])
    lines += _table(["target", "accepted/s (2xx)", "p50 ms", "p99 ms", "non-2xx",
                     "socket errors", "server CPU (cores)"], rows)
    ratios = results.get("ratios", {})
    if ratios:
        lines.append("")
        lines.append(f"Clarion's accepted/s is **{_fmt(ratios.get('clarion_vs_ceiling'), 3)}×** the"
                     f" HTTP ceiling's and **{_fmt(ratios.get('clarion_vs_reference'), 2)}×** the"
                     " reference's (same connections); best of the sweep:"
                     f" {_fmt(ratios.get('best_clarion_vs_ceiling'), 3)}× /"
                     f" {_fmt(ratios.get('best_clarion_vs_reference'), 2)}×.")
    sweep_rows = []
    for target in TARGETS:
        for point in results.get("sweep", {}).get(target, []):
            lat = point["latency_ms"]
            batches = point.get("gateway_batches") or {}
            sweep_rows.append([LABELS[target], _fmt(point["connections"]),
                               _fmt(point["accepted_per_s"], 0),
                               _fmt(lat["p50"], 2), _fmt(lat["p99"], 2),
                               _fmt(point.get("non2xx")),
                               _fmt(point.get("server_cpu_cores"), 2),
                               _fmt(point.get("machine_busy_cores"), 2),
                               _fmt(point.get("other_processes")),
                               _fmt(batches.get("mean"), 2) if batches else "–"])
    if sweep_rows:
        lines += ["", "### Sweep (the plot's points)", ""]
        lines += _table(["target", "connections", "accepted/s", "p50 ms", "p99 ms", "non-2xx",
                         "target CPU (cores)", "machine busy (cores)", "other test processes",
                         "notifications per Gateway batch"], sweep_rows)
    delivery = results.get("delivery", {})
    if delivery:
        lines += ["", "### Clarion delivery (accepted → simulator received)", ""]
        rows = []
        for key, title in (("idle", "idle: 1 at a time"),
                           ("latency_0ms", "load, provider latency 0 ms"),
                           ("half_rate", "paced at half the max rate, 0 ms"),
                           ("latency_100ms", "load, provider latency 100 ms")):
            d = delivery.get(key)
            if not d:
                continue
            e2e = d.get("e2e_ms", {})
            sent = d.get("e2e_from_sent_ms", {})
            rows.append([title, _fmt(d.get("accepted_per_s"), 0),
                         _fmt(d.get("accept_latency_ms", {}).get("p50"), 2),
                         _fmt(d.get("accept_latency_ms", {}).get("p99"), 2),
                         _fmt(e2e.get("p50"), 1), _fmt(e2e.get("p99"), 1),
                         _fmt(sent.get("p50"), 1), _fmt(sent.get("p99"), 1),
                         _fmt(d.get("deliveries_per_s"), 0), _fmt(d.get("emails_per_s"), 0),
                         f"{_fmt(d.get('delivered'))}/{_fmt(d.get('expected'))}"])
        backlog = (delivery.get("latency_100ms") or {}).get("backlog")
        if backlog:
            rows.append([f"backlog drain, provider latency {backlog['latency_ms']} ms",
                         "–", "–", "–", "–", "–", "–", "–",
                         _fmt(backlog.get("pushs_per_s", 0) + backlog.get("emails_per_s", 0), 0)
                         if backlog.get("emails_per_s") else "–",
                         _fmt(backlog.get("emails_per_s"), 0),
                         f"{_fmt(backlog.get('delivered'))}/{_fmt(backlog.get('expected'))}"])
        lines += _table(["phase", "accepted/s", "POST p50 ms", "POST p99 ms",
                         "accepted→received p50 ms", "p99 ms", "sent→received p50 ms", "p99 ms",
                         "deliveries/s", "emails/s", "delivered/expected"], rows)
    batch = results.get("batch", [])
    if batch:
        lines += ["", "### Clarion's batch endpoint (POST /v1/notifications/batch, provider 0 ms)",
                  ""]
        lines += _table(
            ["per request", "connections", "notifications accepted/s", "request p50 ms",
             "request p99 ms", "statuses", "Clarion CPU (cores)", "machine busy (cores)"],
            [[_fmt(b["per_request"]), _fmt(b["connections"]), _fmt(b["accepted_per_s"], 0),
              _fmt(b["latency_ms"]["p50"], 1), _fmt(b["latency_ms"]["p99"], 1),
              ", ".join(f"{k}: {v}" for k, v in sorted(b["statuses"].items())),
              _fmt(sum((b.get("cpu_cores") or {}).values()), 2),
              _fmt(b.get("machine_busy_cores"), 2)] for b in batch])
    goals = results.get("goals", [])
    if goals:
        lines += ["", "### The issue's targets", ""]
        lines += _table(["target", "measured", "met"],
                        [[g["goal"], g["measured"],
                          "–" if g["met"] is None else ("yes" if g["met"] else "**no**")]
                         for g in goals])
    cpu = results.get("cpu", {}).get("clarion_main")
    if cpu:
        lines += ["", f"### CPU per Clarion process at {conns} connections (cores)", ""]
        lines += _table(["process", "cores"], [[k, _fmt(v, 2)] for k, v in cpu.items()])
    profile = results.get("profile", {})
    if profile:
        lines += ["", "### py-spy under load: where each process's threads spend wall time", ""]
        for name, summary in profile.items():
            if "error" in summary:
                lines.append(f"- **{name}**: py-spy failed: {summary['error'][:200]}")
                continue
            for kind, data in summary["threads"].items():
                if kind == "worker-pool threads" or kind == "other threads":
                    busy = 100 - dict(data["wall_pct"]).get("idle (waiting)", 0.0)
                    lines.append(f"- **{name}**, {kind}: busy {busy:.0f}% of the time")
                    continue
                top = "; ".join(f"{c} {pct}%" for c, pct in data["wall_pct"][:5])
                lines.append(f"- **{name}**, {kind}: {top}")
            hot = "; ".join(f"`{fn}` {pct}%" for fn, pct in summary["self_pct_of_busy"][:4])
            lines.append(f"  - hottest frames when not waiting: {hot}")
    return "\n".join(lines) + "\n"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """Latency against throughput for each target, one point per connection count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"clarion": "tab:red", "reference": "tab:blue", "ceiling": "tab:gray"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for target in TARGETS:
        points = results.get("sweep", {}).get(target, [])
        if not points:
            continue
        x = [max(p["accepted_per_s"], 0.1) for p in points]
        p99 = [max(p["latency_ms"]["p99"], 0.01) for p in points]
        p50 = [max(p["latency_ms"]["p50"], 0.01) for p in points]
        c = colours[target]
        left.plot(x, p99, "o-", color=c, label=f"{LABELS[target]} p99")
        left.plot(x, p50, "s--", color=c, alpha=0.6, label=f"{LABELS[target]} p50")
        for p, xv, yv in zip(points, x, p99, strict=True):
            left.annotate(f"{p['connections']}c", (xv, yv), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=c)
        right.plot([p["connections"] for p in points], x, "o-", color=c, label=LABELS[target])
    left.set_xlabel("accepted requests/s (2xx, log)")
    left.set_xscale("log")
    left.set_ylabel("latency (ms, log)")
    left.set_yscale("log")
    left.set_title("latency vs throughput (points: keep-alive connections)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    right.set_xlabel("concurrent connections (log)")
    right.set_xscale("log", base=2)
    right.set_ylabel("accepted requests/s (2xx, log)")
    right.set_yscale("log")
    right.set_title("throughput vs offered concurrency")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    meta = results.get("meta", {})
    fig.suptitle(f"POST /v1/notifications on {meta.get('nproc')} cores, "
                 f"{meta.get('load_tool')}, {results.get('plan', {}).get('duration')} s per point",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
