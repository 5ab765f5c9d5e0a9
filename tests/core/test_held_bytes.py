"""`HeldBytes`: one budget for what the hub holds, with a fair share once half is used."""

from __future__ import annotations

from hub.core.held_bytes import HeldBytes


def test_a_party_alone_holds_at_most_half_leaving_room_for_the_next() -> None:
    held = HeldBytes(1000)
    assert held.refusal("a", 500) is None
    held.hold("a", 500)
    why = held.refusal("a", 1)
    assert why is not None and "share" in why
    assert held.refusal("b", 333) is None  # the next one gets in: a third each now
    assert held.refusal("b", 334) is not None


def test_past_half_each_party_holds_at_most_its_share() -> None:
    held = HeldBytes(1000)
    held.hold("a", 450)
    held.hold("b", 50)
    # Past half with two parties: shares of 1000 / 3 each (room for a third).
    assert held.refusal("a", 10) is not None  # a holds more than its share already
    assert held.refusal("b", 283) is None
    assert held.refusal("b", 284) is not None
    assert held.refusal("c", 250) is None  # a newcomer: 1000 / 4


def test_the_budget_is_hard_and_outbound_counts_in_it() -> None:
    held = HeldBytes(1000)
    held.outbound = 900
    why = held.refusal("a", 101)
    assert why is not None and "max_held_payload_bytes" in why
    held.outbound = 0
    held.hold("a", 400)
    held.release("a", 400)
    assert held.jobs == 0 and held.parties == 0 and held.held_by("a") == 0
    assert held.refusal("a", 500) is None
