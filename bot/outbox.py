"""The outbox worker: sends queued delegations when they fall due, in the background of `run`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from bot.delegation import DelegationService

log = logging.getLogger(__name__)
IDLE_POLL_S = 5.0  # also picks up rows queued by another process (the CLI) sharing the database


class OutboxWorker:
    """Wakes when something is queued or falls due; one per process."""

    def __init__(self, delegations: DelegationService, *, idle_poll_s: float = IDLE_POLL_S) -> None:
        self._delegations = delegations
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        recovered = await self._delegations.recover()
        if recovered:
            log.warning("outbox: %d delegation(s) were being sent when the bot stopped; decided each", recovered)
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._delegations.process_due()
                delay = await self._delay()
            except Exception:
                log.exception("outbox: a round failed; trying again shortly")
                delay = self._idle_poll_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _delay(self) -> float:
        due = await self._delegations.next_due()
        if due is None:
            return self._idle_poll_s
        now = datetime.now(due.tzinfo)
        return max(0.05, min(self._idle_poll_s, (due - now).total_seconds()))
