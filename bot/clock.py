"""Time, in one place: an injectable clock (tests move it by hand) and one text format for SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


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
