#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1; start whichever is installed but
# stopped; name whatever is missing. Used by `make run` and `make test`.
set -u

fail=0
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  for _ in $(seq 1 "$limit"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "ensure-services: $name did not come up within ${limit}s" >&2
  return 1
}

# PostgreSQL
if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "ensure-services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    wait_for PostgreSQL 30 port_open 5432 || fail=1
  else
    echo "ensure-services: PostgreSQL is not running on 127.0.0.1:5432 and is not installed (apt-get install postgresql)" >&2
    fail=1
  fi
fi

# Redis
if ! port_open 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "ensure-services: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_for Redis 15 port_open 6379 || fail=1
  else
    echo "ensure-services: Redis is not running on 127.0.0.1:6379 and is not installed (apt-get install redis-server)" >&2
    fail=1
  fi
fi

# RabbitMQ
if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "ensure-services: starting RabbitMQ (this takes a few seconds)"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    # Called too early, await_startup exits 69 (node not up yet): poll it.
    wait_for RabbitMQ 90 rabbitmqctl -q await_startup || fail=1
    wait_for "RabbitMQ AMQP port" 30 port_open 5672 || fail=1
  else
    echo "ensure-services: RabbitMQ is not running on 127.0.0.1:5672 and is not installed (apt-get install rabbitmq-server)" >&2
    fail=1
  fi
fi

if [ "$fail" -ne 0 ]; then
  echo "ensure-services: some services are missing; see above" >&2
  exit 1
fi
echo "ensure-services: PostgreSQL, Redis and RabbitMQ are up"
