"""The chaos ledger (benchmarks/chaos.py), short and seeded: every scenario against real
hub processes, agent SDK node processes and a real redis-server, with every submit
accounted for. The targets are the benchmark's: 0 unanswered, 0 duplicate results,
0 re-runs of a finished job, 0 leaked slots; rolling restart: 0 failed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _chaos_ledger import FIELDS
from _chaos_scenarios import LONG, SCENARIOS, TINY
from chaos import TARGETS, met, run_scenario

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [name for name in SCENARIOS if name not in LONG])
def test_every_submit_is_answered_once_and_nothing_is_lost(name: str) -> None:
    summary = run_scenario(name, TINY, seed=12)
    assert "error" not in summary, summary
    assert set(FIELDS) <= set(summary)
    assert summary["submits"] > 0 and summary["results_ok"] > 0
    missed = {k: summary[k] for k in TARGETS if summary[k]}
    assert met(summary), f"missed {missed}; the whole ledger: {summary}"
