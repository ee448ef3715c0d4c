"""A clock that moves only when a test says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def days_from_today(days: int) -> str:
    """A date relative to today (UTC) as YYYY-MM-DD: what a test passes where the code reads the real clock."""
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
