"""`loggable`: a peer's string escaped and bounded for one log line."""

from __future__ import annotations

from hub.core.loggable import FIELD_LIMIT, loggable


def test_printable_text_is_unchanged() -> None:
    text = "node gpu-7 (pool 2): ok, äöü 日本語 \\n stays two characters"
    assert loggable(text) is text


def test_control_characters_are_escaped() -> None:
    assert loggable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert loggable("nul\x00 esc\x1b[31m del\x7f nel\x85") == (
        "nul\\x00 esc\\x1b[31m del\\x7f nel\\x85"
    )
    assert loggable("ls\u2028ps\u2029rlo\u202e") == "ls\\u2028ps\\u2029rlo\\u202e"
    assert loggable("lone \ud800") == "lone \\ud800"


def test_long_text_keeps_its_start_and_says_how_long_it_was() -> None:
    out = loggable("x" * 900_000)
    assert out == "x" * FIELD_LIMIT + "…[900000 chars]"
    assert loggable("y" * 50, 10) == "y" * 10 + "…[50 chars]"
    # Escapes come after the cut: a string of controls stays bounded (4 chars each).
    assert len(loggable("\x00" * 10_000)) <= 4 * FIELD_LIMIT + 20
