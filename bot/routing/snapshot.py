"""What routing knows of each agent at one moment: gathered from the store and the monitor, then decided on purely.

In flight (docs/routing-design.md): the agent's delegations `queued`/`sending`, its workflow steps
`dispatching`/`running`, and its plain delegations accepted in the last 15 minutes (a 2026.2.12 gateway tells us
no end for those). Recent acceptance: of its last 20 delegations that ended, how many were accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ACCEPTED_COUNTS_FOR_S = 15 * 60  # a plain accepted delegation counts as in flight this long
RECENT = 20  # delegations the acceptance rate looks at


@dataclass(frozen=True)
class AgentFacts:
    """One agent as routing sees it; `readiness` is the text a refusal shows (`down since 10:02 (…)`)."""

    name: str
    capabilities: frozenset[str]
    ready: bool
    readiness: str
    silenced_until: datetime | None = None
    silenced_by: str | None = None
    in_flight: int = 0
    cap: int | None = None  # None: no cap known
    cap_note: str = ""  # where the cap comes from: `config`, `learned 10:05 from a 503`
    accepted: int = 0  # of the last RECENT delegations that ended
    ended: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The fleet in config order (the stable tie-break) at `at`."""

    at: datetime
    agents: tuple[AgentFacts, ...]
