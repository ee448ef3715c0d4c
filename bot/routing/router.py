"""The routing decision, pure over a snapshot: filter, then score, then explain (docs/routing.md).

Filters, each with the words a refusal reads: capabilities (`lacks meshing`), authority (`tech-lead may not delegate
to manager`), ready (`down since 10:02 (…)`), not silenced (`silenced by alice until 11:00`), under its in-flight cap
(`4 in flight, cap 4 (learned 10:05 from a 503)`). The survivors are ranked, lexicographically so the choice can be
said in words: fewest in flight, affinity (when asked), recent acceptance rate, config order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.authz import AccessLevel, Requester
from bot.clock import short_time
from bot.config import ClusterConfig
from bot.routing.snapshot import AgentFacts, Snapshot

FILTERS = ("capabilities", "authority", "ready", "silence", "cap")
Authority = Callable[[str], str | None]  # an agent -> why the requester may not delegate to it, or None


def authority_of(config: ClusterConfig, requester: Requester) -> Authority:
    """/delegate's rule (bot.delegation.authorize), worked out once for the whole fleet: a person needs the operator
    level, an agent its `delegates_to`; nobody delegates to itself. Short reasons, one per row of the table."""
    if requester.is_agent:
        allowed = frozenset(config.delegation_targets(requester.name))

        def agent_rule(agent: str) -> str | None:
            if agent == requester.name:
                return f"{agent} may not delegate to itself"
            return None if agent in allowed else f"{requester.name} may not delegate to {agent}"

        return agent_rule
    refusal = None if requester.level >= AccessLevel.OPERATOR else f"{requester.name} is not an operator"
    return lambda agent: refusal


@dataclass(frozen=True)
class RouteRow:
    """One agent's line of the table: every filter's verdict, and its rank when it survived them."""

    agent: str
    refusals: dict[str, str]  # filter -> why it failed; empty when the agent is eligible
    readiness: str
    in_flight: int
    cap: int | None
    accepted: int
    ended: int
    affinity: bool = False
    rank: int | None = None  # 1 = chosen, among the eligible (or, when queued, among those only not ready)

    @property
    def eligible(self) -> bool:
        return not self.refusals

    @property
    def acceptance(self) -> str:
        return f"{self.accepted} of the last {self.ended} accepted" if self.ended else "no delegations yet"

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "eligible": self.eligible, "refusals": dict(self.refusals),
            "readiness": self.readiness, "in_flight": self.in_flight, "cap": self.cap, "accepted": self.accepted,
            "ended": self.ended, "affinity": self.affinity, "rank": self.rank,
        }  # fmt: skip


@dataclass(frozen=True)
class RouteDecision:
    """The choice (or none), whether it waits for its agent to be back, why, and the table it was made from."""

    needs: tuple[str, ...]
    requester: str
    rows: tuple[RouteRow, ...]
    chosen: str | None
    queued: bool
    explanation: str
    affinity_agent: str | None = None
    notes: tuple[str, ...] = field(default=())

    def row(self, agent: str) -> RouteRow:
        return next(row for row in self.rows if row.agent == agent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "needs": list(self.needs), "requester": self.requester, "chosen": self.chosen, "queued": self.queued,
            "explanation": self.explanation, "affinity": self.affinity_agent,
            "table": [row.to_dict() for row in self.rows],
        }  # fmt: skip


def decide(
    snapshot: Snapshot,
    requester: str,
    needs: Sequence[str],
    authority: Authority,
    *,
    affinity_agent: str | None = None,
) -> RouteDecision:
    """Filter every agent, rank the survivors, and say why the first one is chosen (or why nobody is)."""
    wanted = tuple(needs)
    rows: list[RouteRow] = []
    keys: dict[str, tuple[Any, ...]] = {}
    for index, facts in enumerate(snapshot.agents):
        refusals = _refusals(facts, wanted, authority, snapshot)
        affinity = facts.name == affinity_agent
        rows.append(
            RouteRow(facts.name, refusals, facts.readiness, facts.in_flight, facts.cap, facts.accepted, facts.ended,
                     affinity)
        )  # fmt: skip
        # No history counts as a perfect record: a new agent gets its chance.
        rate = facts.accepted / facts.ended if facts.ended else 1.0
        keys[facts.name] = (facts.in_flight, not affinity, -rate, index)
    eligible = [row for row in rows if row.eligible]
    queued = False
    if not eligible:
        # Readiness the only failing filter: the outbox sends it when the agent is back, as for a named agent.
        eligible = [row for row in rows if set(row.refusals) == {"ready"}]
        queued = bool(eligible)
    ranked = sorted(eligible, key=lambda row: keys[row.agent])
    ranks = {row.agent: position for position, row in enumerate(ranked, 1)}
    rows = [_with_rank(row, ranks.get(row.agent)) for row in rows]
    chosen = ranked[0].agent if ranked else None
    decision = RouteDecision(wanted, requester, tuple(rows), chosen, queued, "", affinity_agent)
    return _explained(decision)


def _refusals(facts: AgentFacts, needs: tuple[str, ...], authority: Authority, snapshot: Snapshot) -> dict[str, str]:
    refusals: dict[str, str] = {}
    lacking = [need for need in needs if need not in facts.capabilities]
    if lacking:
        refusals["capabilities"] = f"lacks {', '.join(lacking)}"
    why = authority(facts.name)
    if why is not None:
        refusals["authority"] = why
    if not facts.ready:
        refusals["ready"] = facts.readiness
    if facts.silenced_until is not None and facts.silenced_until > snapshot.at:
        refusals["silence"] = f"silenced by {facts.silenced_by or 'an admin'} until {short_time(facts.silenced_until)}"
    if facts.cap is not None and facts.in_flight >= facts.cap:
        note = f" ({facts.cap_note})" if facts.cap_note else ""
        refusals["cap"] = f"{facts.in_flight} in flight, cap {facts.cap}{note}"
    return refusals


def _with_rank(row: RouteRow, rank: int | None) -> RouteRow:
    if rank is None:
        return row
    return RouteRow(row.agent, row.refusals, row.readiness, row.in_flight, row.cap, row.accepted, row.ended,
                    row.affinity, rank)  # fmt: skip


def _explained(decision: RouteDecision) -> RouteDecision:
    needs = ", ".join(decision.needs) or "no particular capability"
    if decision.chosen is None:
        # The agents that have what is needed say why each cannot take it; the table has every other one.
        capable = [row for row in decision.rows if "capabilities" not in row.refusals] or list(decision.rows)
        text = f"nobody can take work needing {needs}: " + "; ".join(
            f"{row.agent}: {', '.join(row.refusals.values())}" for row in capable
        )
    elif decision.queued:
        text = (
            f"queued for {decision.chosen}: no agent with {needs} is ready "
            f"({decision.row(decision.chosen).readiness}); sent when {decision.chosen} is back"
        )
    else:
        row = decision.row(decision.chosen)
        parts = [f"has {needs}" if decision.needs else "needs nothing in particular", "ready",
                 f"{row.in_flight} in flight"]  # fmt: skip
        if row.affinity:
            parts.append("ran the earlier step of this run")
        parts.append(row.acceptance)
        text = f"{row.agent}: {'; '.join(parts)}"
    return RouteDecision(decision.needs, decision.requester, decision.rows, decision.chosen, decision.queued, text,
                         decision.affinity_agent, decision.notes)  # fmt: skip
