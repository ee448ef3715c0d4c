"""Cluster control for a requester: who may drive the agents' units, and the audit line every action leaves.

`SystemdUnits` knows how to start, stop and restart a unit but not who asked; this service is the one
place that checks the admin level and writes `cluster.<verb>` rows to the audit trail, so /cluster (and
any other front end that adopts it) gets the same decision and the same record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.audit import audit_row
from bot.authz import AccessLevel, Requester
from bot.clock import Clock, iso, utcnow
from bot.config import ClusterConfig
from bot.errors import AtomizerError, InvalidInput, NotAllowed
from bot.monitor import StatusMonitor
from bot.store import Store
from bot.systemd import ACTIONS, DEFAULT_LOG_LINES, Action, SystemdUnits, UnitActionResult, check_lines, resolve_agents


@dataclass(frozen=True)
class Silence:
    """A silence set (or lifted, when `duration_s` is 0) on one agent's alerts."""

    agent: str
    until: datetime
    duration_s: float

    @property
    def lifted(self) -> bool:
        return self.duration_s == 0


class ClusterControl:
    """Start, stop, restart, logs and alert silences, for admins only, each audited."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        units: SystemdUnits,
        monitor: StatusMonitor,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._config = config
        self._store = store
        self._units = units
        self._monitor = monitor
        self._clock = clock

    @property
    def units(self) -> SystemdUnits:
        return self._units

    # --- deciding ---------------------------------------------------------------------------------

    def check(self, requester: Requester, verb: str) -> None:
        """Admins only: a unit action interrupts whatever the agent is doing, for everyone."""
        if requester.is_agent or requester.level < AccessLevel.ADMIN:
            raise NotAllowed(
                f"cluster {verb} needs the admin level; {requester.describe()} is not. "
                "Ask an admin, or run `atomizer-hq cluster` on the host"
            )

    def plan(self, requester: Requester, action: str, agent: str) -> list[str]:
        """The agents an action would touch, after every check: what a confirmation prompt shows.

        Nothing runs and nothing is written: `act` checks again, and audits, when the action happens.
        """
        if action not in ACTIONS:
            raise InvalidInput(f"unknown action {action!r}; valid: {', '.join(ACTIONS)}")
        return self._resolve(requester, action, agent)

    def _resolve(self, requester: Requester, action: str, agent: str) -> list[str]:
        self.check(requester, action)
        return resolve_agents(self._config, agent, action)

    # --- acting -----------------------------------------------------------------------------------

    async def act(self, requester: Requester, action: Action, agent: str) -> list[UnitActionResult]:
        """Run `action` on `agent` (or "all"), one unit after the other; one audit row per unit."""
        try:
            agents = self.plan(requester, action, agent)
        except NotAllowed as exc:
            await self._audit(requester, f"cluster.{action}", agent, "refused", {"reason": exc.message})
            raise
        results = await self._units.apply(action, agents)
        for result in results:
            detail: dict[str, Any] = {"state": result.state.state}
            if result.error is not None:
                detail["error"] = {"code": result.error.code, "message": result.error.message}
            await self._audit(
                requester, f"cluster.{action}", result.agent, "allowed" if result.ok else "failed", detail
            )
        return results

    async def logs(self, requester: Requester, agent: str, lines: int = DEFAULT_LOG_LINES) -> str:
        """One agent's last journal lines. Logs can hold anything an agent printed, so reading them is audited."""
        try:
            self.check(requester, "logs")
        except NotAllowed as exc:
            await self._audit(requester, "cluster.logs", agent, "refused", {"reason": exc.message})
            raise
        name = self._config.require_agent(agent).name
        check_lines(lines)
        try:
            text = await self._units.logs(name, lines)
        except AtomizerError as exc:
            await self._audit(requester, "cluster.logs", name, "failed", {"lines": lines, "error": exc.code})
            raise
        await self._audit(requester, "cluster.logs", name, "allowed", {"lines": lines})
        return text

    async def silence(self, requester: Requester, agent: str, duration_s: float) -> Silence:
        """No alerts for `agent` for `duration_s` seconds (0 lifts a silence); the monitor checks and bounds it."""
        try:
            self.check(requester, "silence")
        except NotAllowed as exc:
            await self._audit(requester, "cluster.silence", agent, "refused", {"reason": exc.message})
            raise
        name = self._config.require_agent(agent).name
        until = await self._monitor.silence(requester, name, duration_s)
        detail = {"duration_s": duration_s, "until": iso(until) if duration_s else None}
        await self._audit(requester, "cluster.silence", name, "allowed", detail)
        return Silence(name, until, duration_s)

    # --- the audit trail --------------------------------------------------------------------------

    async def _audit(
        self, requester: Requester, action: str, subject: str, decision: str, detail: dict[str, Any]
    ) -> None:
        await self._store.execute(*audit_row(requester, action, subject, decision, detail, self._clock()))
