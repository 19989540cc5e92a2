"""What the console's browser tests share: Debian's Chromium (never a browser Playwright
downloads), where screenshots go, and how long the page may take.

Chromium and Playwright come from `scripts/install-browser.sh` (`make test` runs it). Without
them these tests skip locally and fail under CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
# Nothing but the page under test: no sandbox (root in a container), no GPU, no calls home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WAIT_MS = 20_000  # every wait on the page is bounded by this (a dead letter takes ~6 s)


def missing(reason: str) -> None:
    message = f"{reason}: run `bash scripts/install-browser.sh` (make test does)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
