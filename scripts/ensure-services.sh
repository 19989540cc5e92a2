#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1. Run as root on Debian or Ubuntu,
# it installs whichever is missing with apt-get (and lets a PostgreSQL it installed take local
# connections without a password, as Clarion's default CLARION_DATABASE_URL expects); elsewhere it
# prints the one command to run. Then it starts whichever is installed but stopped. A second run
# changes nothing and prints one line. Used by `make run` and `make test`.
#
#   bash scripts/ensure-services.sh [--dry-run]
#
# --dry-run (or CLARION_ENSURE_DRY_RUN=1) changes nothing: it prints the apt-get command it would
# run and what it would start. For its tests (tests/cli/test_ensure_services.py), what it looks at
# can be pointed elsewhere: CLARION_ENSURE_PATH (where the services' programs and apt-get are
# looked for; default $PATH), CLARION_ENSURE_OS_RELEASE (default /etc/os-release),
# CLARION_ENSURE_UID (default `id -u`) and CLARION_ENSURE_{POSTGRES,REDIS,RABBITMQ}_PORT.
set -u

dry_run=${CLARION_ENSURE_DRY_RUN:-0}
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; fi
search_path=${CLARION_ENSURE_PATH:-$PATH}
os_release=${CLARION_ENSURE_OS_RELEASE:-/etc/os-release}
uid=${CLARION_ENSURE_UID:-$(id -u)}
pg_port=${CLARION_ENSURE_POSTGRES_PORT:-5432}
redis_port=${CLARION_ENSURE_REDIS_PORT:-6379}
rabbitmq_port=${CLARION_ENSURE_RABBITMQ_PORT:-5672}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
have() { PATH=$search_path command -v "$1" >/dev/null 2>&1; }

wait_for() {  # wait_for NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  for _ in $(seq 1 "$limit"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "ensure-services: $name did not come up within ${limit}s" >&2
  return 1
}

newest_cluster() { find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }
postgres_installed() { have pg_ctlcluster && [ -n "$(newest_cluster)" ]; }
redis_installed() { have redis-server; }
rabbitmq_installed() { have rabbitmq-server; }

debian_like() {  # Debian, Ubuntu and their derivatives (ID_LIKE names one of them)
  [ -r "$os_release" ] || return 1
  local ids
  # shellcheck source=/dev/null
  ids=$(. "$os_release" && echo " ${ID:-} ${ID_LIKE:-} ")
  case $ids in *" debian "* | *" ubuntu "*) return 0 ;; esac
  return 1
}

# What is missing (not answering and not installed) → the Debian packages that provide it.
missing=() packages=() stopped=()
survey() {  # survey NAME PORT PACKAGE INSTALLED-CHECK
  if port_open "$2"; then return 0; fi
  if "$4"; then stopped+=("$1"); else missing+=("$1"); packages+=("$3"); fi
}
survey PostgreSQL "$pg_port" postgresql postgres_installed
survey Redis "$redis_port" redis-server redis_installed
survey RabbitMQ "$rabbitmq_port" rabbitmq-server rabbitmq_installed

joined() {  # joined A B C → "A, B and C"
  local out=$1; shift
  while [ $# -gt 1 ]; do out+=", $1"; shift; done
  if [ $# -eq 1 ]; then out+=" and $1"; fi
  echo "$out"
}

if [ ${#packages[@]} -gt 0 ]; then
  install="apt-get install -y --no-install-recommends ${packages[*]}"
  if [ ${#missing[@]} -eq 1 ]; then is="is" them="it"; else is="are" them="them"; fi
  if ! debian_like || ! have apt-get; then
    echo "ensure-services: $(joined "${missing[@]}") $is not installed, and this script installs them only on Debian or Ubuntu (with apt-get): install them with this system's package manager (Debian's packages: ${packages[*]}), start them on 127.0.0.1 (ports 5432, 6379, 5672), then run this again" >&2
    exit 1
  fi
  if [ "$uid" -ne 0 ]; then
    # As root the script does the install and the set-up below; apt-get alone would leave
    # PostgreSQL asking for a password Clarion's default URL does not have.
    echo "ensure-services: $(joined "${missing[@]}") $is not installed; run: sudo bash $0  (as root it runs $install, then sets $them up and starts $them)" >&2
    exit 1
  fi
  if [ "$dry_run" = 1 ]; then
    echo "ensure-services: would run: apt-get update && $install"
  else
    clusters_before=$(newest_cluster)
    echo "ensure-services: installing ${packages[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
      echo "ensure-services: apt-get could not install ${packages[*]}; see above" >&2
      exit 1
    fi
  fi
fi
if [ "$dry_run" = 1 ]; then
  if [ ${#stopped[@]} -gt 0 ]; then echo "ensure-services: would start $(joined "${stopped[@]}")"; fi
  if [ ${#missing[@]} -gt 0 ]; then echo "ensure-services: would set up and start $(joined "${missing[@]}")"; fi
  if [ ${#missing[@]} -eq 0 ] && [ ${#stopped[@]} -eq 0 ]; then
    echo "ensure-services: PostgreSQL, Redis and RabbitMQ are up"
  fi
  exit 0
fi

# A cluster Debian has just made takes TCP connections with a password only (scram-sha-256);
# Clarion's default URL connects as postgres without one, as on the development machines. Only
# a cluster this script installed is changed (a newer one than before apt-get), and only once;
# rules are read top down, so ours go first.
trust_local_connections() {
  local version hba
  version=$(newest_cluster)
  if [ -z "$version" ] || [ "$version" = "${clusters_before:-}" ]; then return 0; fi
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if [ ! -f "$hba" ] || grep -q '^# ensure-services:' "$hba"; then return 0; fi
  {
    echo "# ensure-services: installed for Clarion; local connections need no password"
    printf '%s\n' "local all all trust" "host all all 127.0.0.1/32 trust" "host all all ::1/128 trust"
    cat "$hba"
  } >"$hba.clarion" && cat "$hba.clarion" >"$hba"  # cat >, not mv: keeps its owner and mode
  rm -f "$hba.clarion"
  if port_open "$pg_port"; then  # apt-get's postinst may have started it already
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload >/dev/null || true
  fi
}
case " ${packages[*]:-} " in *" postgresql "*) trust_local_connections ;; esac

fail=0

# PostgreSQL
if ! port_open "$pg_port"; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(newest_cluster)" main start || true
  wait_for PostgreSQL 30 port_open "$pg_port" || fail=1
fi

# Redis
if ! port_open "$redis_port"; then
  echo "ensure-services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null
  wait_for Redis 15 port_open "$redis_port" || fail=1
fi

# RabbitMQ
if ! port_open "$rabbitmq_port"; then
  echo "ensure-services: starting RabbitMQ (this takes a few seconds)"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  # Called too early, await_startup exits 69 (node not up yet): poll it.
  wait_for RabbitMQ 90 rabbitmqctl -q await_startup || fail=1
  wait_for "RabbitMQ AMQP port" 30 port_open "$rabbitmq_port" || fail=1
fi

if [ "$fail" -ne 0 ]; then
  echo "ensure-services: some services did not start; see above" >&2
  exit 1
fi
echo "ensure-services: PostgreSQL, Redis and RabbitMQ are up"
