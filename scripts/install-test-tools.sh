#!/usr/bin/env bash
# What the tests need from the machine beyond Python packages and the three services: iproute2
# (`ip netns`, for the cluster tests' network hosts), shellcheck and Debian's Chromium (the console tests;
# scripts/install-browser.sh). Installs what is missing when it can (root with apt-get); a second
# run does nothing. Used by `make test`.
set -eu

cd "$(dirname "$0")/.."

if ! command -v ip >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: installing iproute2"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
  else
    # Not fatal: without it the namespace tests skip (and fail under CI, saying why).
    echo "install-test-tools: \`ip\` (iproute2) is missing; the cluster tests that make network hosts need it and root (apt-get install iproute2)" >&2
  fi
fi

# shellcheck: tests/cli lints scripts/ensure-services.sh with it.
if ! command -v shellcheck >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: installing shellcheck"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends shellcheck >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }
fi

exec bash scripts/install-browser.sh
