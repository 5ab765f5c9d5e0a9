"""`FairTime`: an expensive frame's sender waits while another party is active, a
cheap one or a lone one never does, a suspended handling is charged its decode only,
and a token's next connection inherits what its last one owed."""

from __future__ import annotations

import pytest

from hub.core.fair_time import (
    CONTENDED_S,
    MAX_PAUSE_S,
    PAUSE_FACTOR,
    PRUNE_AT,
    TURN_SLICE_S,
    FairTime,
)

HEAVY_S = 0.004  # 8 slices


def one_frame(
    fair: FairTime, peer: object, party: object, at_s: float, cpu_s: float,
    decode_s: float = 0.0, others_meanwhile: object = None,
) -> float:
    mark = fair.begin(party, at_s)
    if others_meanwhile is not None:
        fair.begin(others_meanwhile, at_s + cpu_s / 2)
    return fair.end(
        peer, party, mark, cpu_s=cpu_s, decode_s=decode_s, started_s=at_s,
        now_s=at_s + cpu_s,
    )


def test_an_expensive_frame_waits_in_proportion_while_another_party_is_active() -> None:
    fair = FairTime()
    fair.begin("bystander", 10.0)
    pause = one_frame(fair, "link", "flooder", 10.01, HEAVY_S)
    assert pause == pytest.approx(HEAVY_S * PAUSE_FACTOR)
    end = 10.01 + HEAVY_S
    assert fair.wait_s("link", end) == pytest.approx(pause)
    assert fair.wait_s("link", end + pause / 2) == pytest.approx(pause / 2)
    assert fair.wait_s("link", end + pause) == 0.0
    assert fair.paused_s == pytest.approx(pause)


def test_alone_on_the_hub_nobody_waits() -> None:
    fair = FairTime()
    fair.begin("bystander", 10.0)
    # The bystander's last frame is older than CONTENDED_S when the flooder's begins.
    assert one_frame(fair, "link", "flooder", 10.0 + CONTENDED_S + 0.001, HEAVY_S) == 0.0
    assert one_frame(fair, "link", "flooder", 10.2, HEAVY_S) == 0.0
    assert fair.wait_s("link", 10.2) == 0.0 and len(fair) == 0


def test_frames_within_a_turn_never_wait() -> None:
    fair = FairTime()
    fair.begin("bystander", 10.0)
    assert one_frame(fair, "link", "client", 10.0, TURN_SLICE_S) == 0.0
    assert fair.wait_s("link", 10.0) == 0.0


def test_a_suspended_handling_is_charged_its_decode_only() -> None:
    """Other frames ran while the handling waited: its CPU time included theirs."""
    fair = FairTime()
    fair.begin("bystander", 10.0)
    pause = one_frame(
        fair, "link", "client", 10.0, HEAVY_S, decode_s=0.0001, others_meanwhile="bystander"
    )
    assert pause == 0.0
    heavy_decode = one_frame(
        fair, "link", "client", 10.1, HEAVY_S, decode_s=0.002, others_meanwhile="bystander"
    )
    assert heavy_decode == pytest.approx(0.002 * PAUSE_FACTOR)


def test_the_party_s_next_connection_waits_too_but_not_its_other_sessions() -> None:
    fair = FairTime()
    fair.begin("bystander", 10.0)
    pause = one_frame(fair, "link-1", "token", 10.0, HEAVY_S)
    fair.forget("link-1")  # it closed right after its register
    now = 10.0 + HEAVY_S
    # Its next connection's first frame waits what the token owes...
    assert fair.wait_s("link-2", now, party="token") == pytest.approx(pause)
    # ...while a session of the same token that was already open goes on.
    assert fair.wait_s("link-3", now) == 0.0


def test_a_pause_is_bounded_and_forgotten_debts_are_pruned() -> None:
    fair = FairTime()
    fair.begin("bystander", 10.0)
    assert one_frame(fair, "link", "flooder", 10.0, 10.0) == MAX_PAUSE_S
    for i in range(PRUNE_AT):
        fair.begin("bystander", 20.0)
        one_frame(fair, f"l{i}", f"p{i}", 20.0, HEAVY_S)
    # All of those are over by now: the next debt prunes them.
    fair.begin("bystander", 30.0)
    one_frame(fair, "last", "p-last", 30.0, HEAVY_S)
    assert len(fair) == 2  # the last link and its party
