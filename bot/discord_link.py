"""The state of this process's link to Discord, and how long to wait before trying it again.

Discord-free on purpose: the health check, the log lines and the backoff policy are the core's,
while bot/discord_bot.py reports what happens on the wire. An outage of Discord degrades this one
part; the loopback API, the outbox, the monitor and the heartbeats go on without it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bot.clock import Clock, utcnow

RECONNECT_BASE_S = 1.0
RECONNECT_CAP_S = 60.0  # an outage of hours is retried every minute or so, never every 17 min


@dataclass
class ReconnectBackoff:
    """Capped exponential backoff with jitter: 1, 2, 4 … 60 s, each drawn from [½·d, d].

    The jitter spreads a fleet of bots (or one bot's REST and gateway retries) after an outage; the
    lower bound keeps the wait growing, so a long outage costs one log line a minute.
    """

    base_s: float = RECONNECT_BASE_S
    cap_s: float = RECONNECT_CAP_S
    random: Callable[[], float] = random.random
    failures: int = 0

    def delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self.random())

    def reset(self) -> None:
        self.failures = 0


@dataclass
class DiscordLink:
    """Up, down (with why and when the next try is), or off (`run --no-discord`)."""

    clock: Clock = utcnow
    state: str = "connecting"
    reason: str = "connecting to Discord"
    since: datetime = field(default_factory=utcnow)

    def up(self) -> None:
        self._set("up", "connected")

    def down(self, reason: str) -> None:
        self._set("down", reason)

    def off(self, reason: str) -> None:
        self._set("off", reason)

    def _set(self, state: str, reason: str) -> None:
        if (state, reason) != (self.state, self.reason):
            self.since = self.clock()
        self.state, self.reason = state, reason

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    async def check(self) -> str | None:
        """GET /healthz's word on Discord: None when connected, else the reason (off is reported apart)."""
        if self.state == "up":
            return None
        return f"{self.state}: {self.reason}"


def describe_outage(exc: BaseException) -> str:
    """One line for what went wrong reaching Discord: no traceback, no URL query, no token."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, TimeoutError) and not str(exc):
        text = "timed out"
    return " ".join(text.split())[:300]
