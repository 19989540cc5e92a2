"""SMS length: encoding and segments, as carriers count them."""

from __future__ import annotations

from clarion.actors.sms_text import sms_segments


def test_an_empty_text_is_no_segment() -> None:
    assert sms_segments("")["segments"] == 0
    assert sms_segments(None)["segments"] == 0


def test_gsm7_holds_160_characters_in_one_segment_and_153_in_each_of_several() -> None:
    assert sms_segments("a" * 160) == {"encoding": "GSM-7", "characters": 160, "units": 160,
                                       "segments": 1}
    assert sms_segments("a" * 161)["segments"] == 2
    assert sms_segments("a" * 306)["segments"] == 2
    assert sms_segments("a" * 307)["segments"] == 3


def test_gsm7_extension_characters_take_two_slots() -> None:
    text = "€" * 80
    assert sms_segments(text) == {"encoding": "GSM-7", "characters": 80, "units": 160,
                                  "segments": 1}
    assert sms_segments(text + "{")["segments"] == 2


def test_a_character_outside_gsm7_makes_the_whole_text_ucs2() -> None:
    assert sms_segments("é" * 70)["encoding"] == "GSM-7"  # é is in the GSM alphabet
    text = "Привет" + "a" * 64
    assert sms_segments(text) == {"encoding": "UCS-2", "characters": 70, "units": 70,
                                  "segments": 1}
    assert sms_segments(text + "a")["segments"] == 2
    assert sms_segments("a" * 134 + "ж")["segments"] == 3  # 135 units: 67 per segment


def test_an_emoji_is_two_ucs2_units() -> None:
    assert sms_segments("🙂" * 35) == {"encoding": "UCS-2", "characters": 35, "units": 70,
                                      "segments": 1}
