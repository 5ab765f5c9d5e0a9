"""`Membership`: when a hub counts as alive, and when it is declared dead (pure)."""

from __future__ import annotations

from hub.cluster.membership import GRACE_TICKS, Membership


def test_a_hub_dies_after_missing_presence_on_consecutive_checks() -> None:
    members = Membership("a")
    members.seen({"a", "b"})
    assert members.is_live("b")
    for _ in range(GRACE_TICKS - 1):
        assert members.check({"a"}, {"a", "b"}) == ([], [])
        assert members.is_live("b")  # a store restart loses every key at once: wait
    lost, dead = members.check({"a"}, {"a", "b"})
    assert (lost, dead) == (["b"], ["b"])
    assert not members.is_live("b") and members.is_buried("b")
    # Buried once: the next check does not report it as lost again.
    assert members.check({"a"}, {"a", "b"}) == ([], ["b"])


def test_a_missed_check_is_forgiven_when_presence_returns() -> None:
    members = Membership("a")
    members.seen({"b"})
    members.check({"a"}, {"a", "b"})
    members.check({"a", "b"}, {"a", "b"})  # back: the count starts over
    for _ in range(GRACE_TICKS - 1):
        members.check({"a"}, {"a", "b"})
    assert members.is_live("b")


def test_a_message_proves_a_hub_alive_unless_it_was_buried() -> None:
    members = Membership("a")
    members.heard_from("c")
    assert members.is_live("c")
    for _ in range(GRACE_TICKS):
        members.check({"a"}, {"a", "c"})
    assert members.is_buried("c")
    members.heard_from("c")  # a late envelope from a dead hub does not revive it
    assert not members.is_live("c")
    members.check({"a", "c"}, {"a", "c"})  # it announced itself again: alive
    assert members.is_live("c") and not members.is_buried("c")


def test_silent_hubs_are_excluded_and_included_again_when_they_beat() -> None:
    members = Membership("a")
    first = members.beats({"a": (0, "a1"), "b": (100, "b1"), "c": (100, "c1")}, 2000)
    assert first.first_seen == ["b", "c"] and first.excluded == [] and first.restarted == []
    silent = members.beats({"a": (0, "a1"), "b": (2500, "b1"), "c": (100, "c1")}, 2000)
    assert silent.excluded == ["b"] and members.is_excluded("b")
    # Reported once, not on every reading.
    assert members.beats({"a": (0, "a1"), "b": (3000, "b1")}, 2000).excluded == []
    back = members.beats({"a": (0, "a1"), "b": (50, "b1")}, 2000)
    assert back.included == ["b"] and not members.is_excluded("b")


def test_a_new_boot_token_means_the_hub_restarted() -> None:
    members = Membership("a")
    members.beats({"b": (0, "b1")}, 2000)
    changes = members.beats({"b": (0, "b2")}, 2000)
    assert changes.restarted == ["b"] and changes.first_seen == []
    assert members.beats({"b": (0, "b2")}, 2000).restarted == []
    # The hub's own beats never count.
    assert members.beats({"a": (9999, "other")}, 2000) == members.beats({}, 2000)
