"""How long an SMS is: its encoding and how many segments a carrier bills it as.

An SMS is sent in GSM-7 when every character is in the GSM 03.38 alphabet (a few, such as `€`
and `{`, take two of its 7-bit slots), else in UCS-2 (UTF-16 code units: an emoji takes two).
One segment holds 160 GSM-7 slots or 70 UCS-2 units; a longer text is split into segments of
153 or 67 (the rest is the header that joins them). Twilio refuses a body over 1,600 characters.
"""

from __future__ import annotations

from typing import Any

MAX_SMS_CHARS = 1600  # Twilio's limit on `Body` (error 21617)

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")  # two slots each (escape + character)


def sms_segments(text: str | None) -> dict[str, Any]:
    """{"encoding": "GSM-7" | "UCS-2", "characters": n, "units": slots or code units,
    "segments": how many messages a carrier counts}."""
    text = text or ""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        encoding = "GSM-7"
        units = sum(2 if c in _GSM_EXTENDED else 1 for c in text)
        single, multi = 160, 153
    else:
        encoding = "UCS-2"
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    segments = 0 if units == 0 else 1 if units <= single else -(-units // multi)
    return {"encoding": encoding, "characters": len(text), "units": units,
            "segments": segments}
