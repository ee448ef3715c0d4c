"""The routing decision, pure over a snapshot: filter, then score, then explain (docs/routing.md).

Filters, each with the words a refusal reads: capabilities (`lacks meshing`), authority (`tech-lead may not delegate
to manager`), ready (`down since 10:02 (…)`), not silenced (`silenced by alice until 11:00`), under its in-flight cap
(`4 in flight, cap 4 (learned 10:05 from a 503)`). The survivors are ranked, lexicographically so the choice can be
said in words: fewest in flight, affinity (when asked), recent acceptance rate, config order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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


@dataclass(slots=True)  # not frozen: 500 of them per decision, and a frozen dataclass is slow to make
class RouteRow:
    """One agent's line of the table: which filters it failed (their words are written when read), its rank when
    it survived them."""

    facts: AgentFacts
    failing: tuple[str, ...]  # names from FILTERS; empty when the agent is eligible
    needs: tuple[str, ...]
    at: datetime
    authority_refusal: str | None = None
    affinity: bool = False
    rank: int | None = None  # 1 = chosen, among the eligible (or, when queued, among those only not ready)

    @property
    def agent(self) -> str:
        return self.facts.name

    @property
    def eligible(self) -> bool:
        return not self.failing

    @property
    def refusals(self) -> dict[str, str]:
        """Each failing filter, with the words a refusal reads."""
        return {name: self._why(name) for name in self.failing}

    def _why(self, name: str) -> str:
        facts = self.facts
        if name == "capabilities":
            return f"lacks {', '.join(need for need in self.needs if need not in facts.capabilities)}"
        if name == "authority":
            return self.authority_refusal or "may not be delegated to"
        if name == "ready":
            return facts.readiness
        if name == "silence":
            until = short_time(facts.silenced_until) if facts.silenced_until else "?"
            return f"silenced by {facts.silenced_by or 'an admin'} until {until}"
        note = f" ({facts.cap_note})" if facts.cap_note else ""
        return f"{facts.in_flight} in flight, cap {facts.cap}{note}"

    @property
    def readiness(self) -> str:
        return self.facts.readiness

    @property
    def in_flight(self) -> int:
        return self.facts.in_flight

    @property
    def cap(self) -> int | None:
        return self.facts.cap

    @property
    def accepted(self) -> int:
        return self.facts.accepted

    @property
    def ended(self) -> int:
        return self.facts.ended

    @property
    def acceptance(self) -> str:
        return f"{self.accepted} of the last {self.ended} accepted" if self.ended else "no delegations yet"

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "eligible": self.eligible, "refusals": self.refusals,
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

    def row(self, agent: str) -> RouteRow:
        return next(row for row in self.rows if row.agent == agent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "needs": list(self.needs), "requester": self.requester, "chosen": self.chosen, "queued": self.queued,
            "explanation": self.explanation, "affinity": self.affinity_agent,
            "table": [row.to_dict() for row in self.rows],
        }  # fmt: skip


WAITABLE = frozenset({"ready", "cap"})  # filters that pass again on their own: routing may queue behind them


def decide(
    snapshot: Snapshot,
    requester: str,
    needs: Sequence[str],
    authority: Authority,
    *,
    affinity_agent: str | None = None,
    excluded: Mapping[str, str] | None = None,
) -> RouteDecision:
    """Filter every agent, rank the survivors, and say why the first one is chosen (or why nobody is).
    `excluded`: agents the requester may not hand this work to beyond its `delegates_to` (a chain's members), with
    why; they fail the authority filter."""
    excluded = excluded or {}
    wanted = tuple(needs)
    needed = frozenset(wanted)
    at = snapshot.at
    rows: list[RouteRow] = []
    eligible: list[RouteRow] = []
    waiting: list[RouteRow] = []  # would take it, once back or with room: down or at its cap, nothing else
    for facts in snapshot.agents:
        failing: list[str] = []
        if not needed <= facts.capabilities:
            failing.append("capabilities")
        why = excluded.get(facts.name) or authority(facts.name)
        if why is not None:
            failing.append("authority")
        if not facts.ready:
            failing.append("ready")
        if facts.silenced_until is not None and facts.silenced_until > at:
            failing.append("silence")
        if facts.cap is not None and facts.in_flight >= facts.cap:
            failing.append("cap")
        row = RouteRow(facts, tuple(failing), wanted, at, why, facts.name == affinity_agent)
        rows.append(row)
        if not failing:
            eligible.append(row)
        elif set(failing) <= WAITABLE:
            waiting.append(row)
    # Only readiness or load failing: the outbox sends it when the agent is back or has room, as for a named agent
    # (the scenario: nx-expert busy, nobody else meshes: queued for nx-expert, never handed to someone who cannot).
    queued = not eligible and bool(waiting)
    order = {facts.name: index for index, facts in enumerate(snapshot.agents)}
    ranked = sorted(eligible or waiting, key=lambda row: _score(row, order))
    for position, row in enumerate(ranked, 1):
        row.rank = position
    chosen = ranked[0].agent if ranked else None
    return _explained(RouteDecision(wanted, requester, tuple(rows), chosen, queued, "", affinity_agent))


def _score(row: RouteRow, order: dict[str, int]) -> tuple[int, bool, float, int]:
    """Lower is better: fewest in flight, then affinity, then the acceptance rate (no history counts as a perfect
    record: a new agent gets its chance), then config order."""
    facts = row.facts
    rate = facts.accepted / facts.ended if facts.ended else 1.0
    return (facts.in_flight, not row.affinity, -rate, order[facts.name])


def _explained(decision: RouteDecision) -> RouteDecision:
    needs = ", ".join(decision.needs) or "no particular capability"
    if decision.chosen is None:
        # The agents that have what is needed say why each cannot take it; the table has every other one.
        capable = [row for row in decision.rows if "capabilities" not in row.refusals] or list(decision.rows)
        text = f"nobody can take work needing {needs}: " + "; ".join(
            f"{row.agent}: {', '.join(row.refusals.values())}" for row in capable
        )
    elif decision.queued:
        row = decision.row(decision.chosen)
        down, full = "ready" in row.refusals, "cap" in row.refusals
        lacking = " and ".join(word for word, failing in (("ready", down), ("free", full)) if failing)
        state = " and ".join(
            part for part, failing in ((row.readiness, down), (f"busy: {row.refusals.get('cap')}", full)) if failing
        )
        when = " and ".join(part for part, failing in (("it is back", down), ("it has room", full)) if failing)
        text = f"queued for {row.agent}: no agent with {needs} is {lacking}; {row.agent} is {state}; sent when {when}"
    else:
        row = decision.row(decision.chosen)
        parts = [f"has {needs}" if decision.needs else "needs nothing in particular", "ready",
                 f"{row.in_flight} in flight"]  # fmt: skip
        if row.affinity:
            parts.append("ran the earlier step of this run")
        parts.append(row.acceptance)
        text = f"{row.agent}: {'; '.join(parts)}"
    return RouteDecision(decision.needs, decision.requester, decision.rows, decision.chosen, decision.queued, text,
                         decision.affinity_agent)  # fmt: skip
