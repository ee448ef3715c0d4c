"""Time, in one place: an injectable clock (tests move it by hand) and one text format for SQLite."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime

from bot.errors import InvalidInput

Clock = Callable[[], datetime]

_DURATION_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3_600, "hr": 3_600, "hrs": 3_600, "hour": 3_600, "hours": 3_600,
    "d": 86_400, "day": 86_400, "days": 86_400,
}  # fmt: skip
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """One fixed format, so timestamps compare correctly as text in SQL."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def human_duration(seconds: float) -> str:
    """3 h 05 min, 4 min 12 s, 9 s: what an operator reads in an alert."""
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def short_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M UTC")


def parse_duration(text: str) -> float:
    """Seconds in "2h", "30m", "1h30m", "90 s", "1.5 days"; "0" alone means none (e.g. to lift a silence).

    A bare number other than 0 is refused: "30" could be seconds or minutes, and guessing wrong on a
    silence hides real alerts.
    """
    cleaned = text.strip().lower()
    example = "write it as e.g. '30m', '2h', '1h30m' or '1d' (s, m, h, d), or '0' for none"
    if not cleaned:
        raise InvalidInput(f"the duration is empty; {example}")
    if re.fullmatch(r"0+(?:\.0*)?", cleaned):
        return 0.0
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        raise InvalidInput(f"{text.strip()!r} has no unit; {example}")
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(cleaned):
        if cleaned[position : match.start()].strip(" ,") or match.group(2) not in _DURATION_UNITS:
            raise InvalidInput(f"{text.strip()!r} is not a duration; {example}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position == 0 or cleaned[position:].strip(" ,"):
        raise InvalidInput(f"{text.strip()!r} is not a duration; {example}")
    if not math.isfinite(total):
        raise InvalidInput(f"{text.strip()!r} is too long a duration")
    return total
