"""Routing for every front end: gather the facts, decide, audit, and learn each agent's in-flight cap.

`delegate auto --needs meshing` (CLI), `{"agent": "auto", "needs": [...]}` (API), `/delegate agent:auto` (Discord)
and a workflow step's `route:` all come here, so they choose the same agent for the same reasons.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from bot.audit import audit_row
from bot.authz import AccessLevel, Requester
from bot.clock import Clock, iso, parse_iso, short_time, utcnow
from bot.cluster import AgentStatus, ClusterService
from bot.config import ClusterConfig
from bot.delegation import Delegation, Reroute
from bot.errors import InvalidInput, StoreError
from bot.monitor import BAD_STATES
from bot.routing.capabilities import closest, parse_needs
from bot.routing.router import RouteDecision, authority_of, decide
from bot.routing.snapshot import ACCEPTED_COUNTS_FOR_S, RECENT, AgentFacts, Snapshot
from bot.routing.table import table_lines
from bot.store import Store

log = logging.getLogger(__name__)
AUTO = "auto"
LEARNED_CAP_S = 600.0  # a cap learned from a 503 admission timeout holds this long
CAP_KEY = "route.cap."  # + agent: the learned cap in the `meta` table


class UnknownCapability(InvalidInput):
    code = "unknown_capability"


class NobodyEligible(InvalidInput):
    """No agent can take the work, not even once it is back: refused with the whole table."""

    code = "nobody_eligible"
    http_status = 409

    def __init__(self, decision: RouteDecision) -> None:
        super().__init__("\n".join(table_lines(decision)))
        self.decision = decision


class RoutingService:
    """Chooses the agent for a delegation that names what it needs instead of who does it."""

    def __init__(self, config: ClusterConfig, store: Store, cluster: ClusterService, *, clock: Clock = utcnow) -> None:
        self._config = config
        self._store = store
        self._cluster = cluster
        self._clock = clock
        # The chain a parent delegation belongs to, and its agents (DelegationService.chain_members; wired by
        # bot.services): a routed sub-delegation leaves them out, as the no-loops rule would refuse them.
        self.chain_members: Callable[[str], Awaitable[tuple[str, frozenset[str]]]] | None = None

    # --- what is asked for --------------------------------------------------------------------

    def declared(self) -> list[str]:
        """Every capability some agent declares, sorted."""
        return sorted({word for agent in self._config.agents for word in agent.capabilities})

    def needs(self, values: str | Iterable[str] | None) -> tuple[str, ...]:
        """Normalized capabilities, each declared by some agent: a typo is bad input with a did-you-mean."""
        try:
            needs = parse_needs(values)
        except ValueError as exc:
            raise InvalidInput(f"needs: {exc}") from None
        if not needs:
            raise InvalidInput("say what the work needs, e.g. --needs meshing (needs:meshing in Discord)")
        known = self.declared()
        for need in needs:
            if need not in known:
                guess = closest(need, known)
                hint = f" Did you mean {guess!r}?" if guess else ""
                raise UnknownCapability(
                    f"no agent declares the capability {need!r}.{hint} Declared: {', '.join(known) or 'none'} "
                    f"(capabilities in {self._config.source})"
                )
        return needs

    # --- deciding -----------------------------------------------------------------------------

    async def preview(
        self,
        requester: Requester,
        needs: Iterable[str],
        affinity_agent: str | None = None,
        *,
        parent: str | None = None,
        excluded: dict[str, str] | None = None,
    ) -> RouteDecision:
        """The decision as it would be made now, not audited (`atomizer-hq route`, /route, `workflow plan`).
        `parent`: the work hangs under that delegation, so the agents already in its chain are left out; so are
        `excluded` ones (agent -> why)."""
        excluded = {**(await self._chain_excluded(parent) if parent else {}), **(excluded or {})}
        snapshot = await self.snapshot()
        return decide(snapshot, requester.name, tuple(needs), authority_of(self._config, requester),
                      affinity_agent=affinity_agent, excluded=excluded)  # fmt: skip

    async def _chain_excluded(self, parent: str) -> dict[str, str]:
        if self.chain_members is None:
            return {}
        chain, members = await self.chain_members(parent)
        return {agent: f"{agent} is in chain {chain} already (no loops)" for agent in members}

    async def route(
        self,
        requester: Requester,
        needs: Iterable[str],
        affinity_agent: str | None = None,
        audit_detail: dict[str, Any] | None = None,
        *,
        parent: str | None = None,
    ) -> RouteDecision:
        """The decision, audited with its table; NobodyEligible when no agent can take it."""
        decision = await self.preview(requester, needs, affinity_agent, parent=parent)
        detail = {**(audit_detail or {}), **decision.to_dict()}
        subject = decision.chosen or ",".join(decision.needs)
        row = audit_row(requester, "route", subject, "allowed" if decision.chosen else "refused", detail, self._clock())
        await self._store.atomically(lambda conn: conn.execute(*row))
        if decision.chosen is None:
            raise NobodyEligible(decision)
        return decision

    async def reroute(self, delegation: Delegation, why: str, tried: frozenset[str]) -> Reroute | None:
        """Another agent for a routed delegation that `tried` did not admit (a 503, a refused connection): the best
        eligible one that is ready now, with its explanation and its audit row (written with the move); None (it
        waits for its agent) when there is none."""
        person = AccessLevel.OPERATOR  # it was allowed to delegate when recorded; a person's authority is a level
        requester = Requester(kind=delegation.requester_kind, name=delegation.requester,  # type: ignore[arg-type]
                              front_end=delegation.front_end,  # type: ignore[arg-type]
                              level=AccessLevel.NONE if delegation.requester_kind == "agent" else person,
                              user_id=delegation.requester_user_id, via=delegation.via)  # fmt: skip
        excluded = {agent: f"did not admit {delegation.display_id}" for agent in tried}
        excluded[delegation.agent] = f"did not admit {delegation.display_id}: {why}"
        parent = f"D-{delegation.parent_id}" if delegation.parent_id is not None else None
        decision = await self.preview(requester, delegation.needed, parent=parent, excluded=excluded)
        if decision.chosen is None or decision.queued:
            log.info("%s waits for %s: no other agent with %s is ready", delegation.display_id, delegation.agent,
                     ", ".join(decision.needs))  # fmt: skip
            return None
        detail = {"delegation": delegation.display_id, "rerouted_from": delegation.agent, "why": why,
                  **decision.to_dict()}  # fmt: skip
        row = audit_row(requester, "route", decision.chosen, "allowed", detail, self._clock())
        return Reroute(decision.chosen, decision.explanation, row)

    async def resolve(
        self,
        requester: Requester,
        agent: str,
        needs: str | Iterable[str] | None,
        *,
        dry_run: bool = False,
        audit_detail: dict[str, Any] | None = None,
        parent: str | None = None,
    ) -> tuple[str, RouteDecision | None]:
        """What a front end's `agent` + `needs` mean: `auto` routes; a named agent with needs must have them.
        `parent` (a sub-delegation): routing never picks an agent already in that chain."""
        if agent.strip().lower() == AUTO:
            wanted = self.needs(needs)
            parent = parent if parent and parent.strip() else None  # blank: the delegation itself says why
            if dry_run:
                decision = await self.preview(requester, wanted, parent=parent)
                if decision.chosen is None:
                    raise NobodyEligible(decision)
            else:
                decision = await self.route(requester, wanted, audit_detail=audit_detail, parent=parent)
            assert decision.chosen is not None
            return decision.chosen, decision
        named = self._config.require_agent(agent)
        if needs:
            lacking = [need for need in self.needs(needs) if need not in named.capabilities]
            if lacking:
                has = ", ".join(named.capabilities) or "no capabilities"
                raise InvalidInput(
                    f"{named.name} lacks {', '.join(lacking)} (it declares {has}); name another agent, or write "
                    f"auto to let atomizer-hq choose one that has it"
                )
        return named.name, None

    # --- the facts ----------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Every agent's readiness, silence, work in flight, cap and recent acceptance, read now."""
        now = self._clock()
        in_flight = await self._in_flight(now)
        recent = await self._recent_acceptance()
        caps = await self._learned_caps(now)
        readiness = await self._readiness(now)
        agents = []
        for agent in self._config.agents:
            ready, why, silenced_until, silenced_by = readiness[agent.name]
            cap, cap_note = (
                (agent.max_in_flight, "max_in_flight in config")
                if agent.max_in_flight
                else caps.get(agent.name, (None, ""))
            )
            accepted, ended = recent.get(agent.name, (0, 0))
            agents.append(
                AgentFacts(agent.name, frozenset(agent.capabilities), ready, why, silenced_until, silenced_by,
                           in_flight.get(agent.name, 0), cap, cap_note, accepted, ended)
            )  # fmt: skip
        return Snapshot(now, tuple(agents))

    async def _in_flight(self, now: datetime) -> dict[str, int]:
        counts: dict[str, int] = {}
        since = iso(now - timedelta(seconds=ACCEPTED_COUNTS_FOR_S))
        # A step's own delegation is counted through its step (dispatching/running), not twice.
        rows = await self._store.fetchall(
            "SELECT agent, count(*) FROM delegations WHERE workflow_step IS NULL AND (status IN ('queued', 'sending') "
            "OR (status = 'accepted' AND accepted_at >= ?)) GROUP BY agent",
            (since,),
        )
        rows += await self._store.fetchall(
            "SELECT agent, count(*) FROM workflow_steps WHERE status IN ('dispatching', 'running') "
            "AND agent IS NOT NULL GROUP BY agent"
        )
        for agent, count in rows:
            counts[agent] = counts.get(agent, 0) + count
        return counts

    async def _recent_acceptance(self) -> dict[str, tuple[int, int]]:
        rows = await self._store.fetchall(
            "SELECT agent, sum(status = 'accepted'), count(*) FROM (SELECT agent, status, row_number() OVER "
            "(PARTITION BY agent ORDER BY id DESC) AS n FROM delegations WHERE status IN ('accepted', 'failed', "
            "'unconfirmed', 'expired')) WHERE n <= ? GROUP BY agent",
            (RECENT,),
        )
        return {agent: (accepted, ended) for agent, accepted, ended in rows}

    async def _learned_caps(self, now: datetime) -> dict[str, tuple[int, str]]:
        rows = await self._store.fetchall("SELECT key, value FROM meta WHERE key LIKE 'route.cap.%'")
        caps: dict[str, tuple[int, str]] = {}
        for key, value in rows:
            learned = json.loads(value)
            if parse_iso(learned["until"]) > now:
                when = short_time(parse_iso(learned["at"]))
                caps[key.removeprefix(CAP_KEY)] = (int(learned["cap"]), f"learned {when} from a 503")
        return caps

    async def _readiness(self, now: datetime) -> dict[str, tuple[bool, str, datetime | None, str | None]]:
        """The monitor's confirmed state where it is fresh; a probe now for agents it has not seen lately (the CLI
        with no bot running, a fresh database)."""
        fresh_after = iso(now - timedelta(seconds=3 * self._config.monitor.interval_s))
        rows = await self._store.fetchall(
            "SELECT agent, observed, confirmed, confirmed_since, detail, last_probe_at, silenced_until, silenced_by "
            "FROM agent_health"
        )
        known = {row["agent"]: row for row in rows}
        result: dict[str, tuple[bool, str, datetime | None, str | None]] = {}
        stale: list[str] = []
        for agent in self._config.agent_names:
            row = known.get(agent)
            silenced = parse_iso(row["silenced_until"]) if row is not None and row["silenced_until"] else None
            by = row["silenced_by"] if row is not None else None
            if row is None or row["last_probe_at"] < fresh_after or row["observed"] == "unknown":
                stale.append(agent)
                result[agent] = (False, "not probed yet", silenced, by)
                continue
            result[agent] = (*_monitor_readiness(row), silenced, by)
        for status in await asyncio.gather(*(self._cluster.probe(agent) for agent in stale)):
            _, _, silenced, by = result[status.name]
            result[status.name] = (*_probe_readiness(status), silenced, by)
        return result

    # --- learning the cap ---------------------------------------------------------------------

    async def admission_timed_out(self, agent: str) -> None:
        """A 503 admission timeout: the agent is full at what it has in flight now; cap it there for a while."""
        now = self._clock()
        try:
            in_flight = (await self._in_flight(now)).get(agent, 0)
            value = {"cap": max(1, in_flight), "at": iso(now), "until": iso(now + timedelta(seconds=LEARNED_CAP_S))}
            await self._store.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (CAP_KEY + agent, json.dumps(value)),
            )
        except StoreError as exc:  # the delegation's own outcome matters more than the lesson
            log.warning("routing: could not record %s's in-flight cap: %s", agent, exc)


def _monitor_readiness(row: Any) -> tuple[bool, str]:
    if row["confirmed"] == "down" or (row["confirmed"] == "unknown" and row["observed"] in BAD_STATES):
        detail = f" ({row['detail']})" if row["detail"] else ""
        return False, f"down since {short_time(parse_iso(row['confirmed_since']))}{detail}"
    if row["observed"] == "starting":
        return False, "starting up"
    return True, "ready"


def _probe_readiness(status: AgentStatus) -> tuple[bool, str]:
    if status.state in ("ready", "degraded"):
        return True, "ready"
    if status.state == "starting":
        return False, "starting up"
    return False, f"{status.state} ({status.readiness.detail})"
