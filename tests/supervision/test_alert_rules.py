"""The Prometheus alerting rules shipped for operators refer only to metrics Clarion exports."""

from __future__ import annotations

import re
from pathlib import Path

from clarion.supervision import metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "clarion-alerts.yml"
# Read at scrape time in http/routes/metrics.py rather than defined in supervision/metrics.py.
SCRAPE_TIME = {"clarion_queue_depth", "clarion_dlq_size", "clarion_cache_requests"}


def exported() -> set[str]:
    names = set(SCRAPE_TIME)
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if isinstance(name, str):
            names.add(name)
            names.add(name + "_total")
    return names


def test_every_metric_in_the_alerting_rules_is_exported() -> None:
    used = set(re.findall(r"\b(clarion_[a-z_]+)", RULES.read_text()))
    assert used, "the rules file names no Clarion metric"
    assert used <= exported(), used - exported()
