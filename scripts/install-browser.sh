#!/usr/bin/env bash
# Install what the browser tests (tests/browser) need and the test extra does not: Debian's Chromium
# at /usr/bin/chromium (and check Playwright is in .venv). Used by `make test`; a second run does
# nothing and takes well under a second.
#
# Never `playwright install`: it downloads a browser build of its own, which this project's
# machines cannot fetch. The tests drive the Debian package's binary instead.
set -eu

cd "$(dirname "$0")/.."
VENV_PYTHON=.venv/bin/python
CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: $CHROMIUM is missing; install Debian's chromium package (as root: apt-get install chromium)" >&2
    exit 1
  fi
  echo "install-browser: installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi

if [ ! -x "$VENV_PYTHON" ]; then
  echo "install-browser: $VENV_PYTHON is missing; run \`make install\` first" >&2
  exit 1
fi
# Playwright itself comes with the test extra (setup.cfg), installed by `make test` just before.
if ! "$VENV_PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "install-browser: playwright is missing from .venv; run \`make test\` (it installs the test extra)" >&2
  exit 1
fi
