"""The client's own tests need no server: they import `fakes` from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

# importlib mode puts no test folder on sys.path; `fakes` is a plain module beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
