"""Who is asking, and at what level: one model for people (by Discord role) and agents (by config)."""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from bot.config import ClusterConfig
from bot.errors import NotAllowed


class AccessLevel(IntEnum):
    """People's levels. Each level may do everything the ones below it may."""

    NONE = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


FrontEnd = Literal["discord", "cli", "api", "task-board", "scheduler", "demo"]


@dataclass(frozen=True)
class Requester:
    """The caller of a core operation, whatever front end it came through."""

    kind: Literal["person", "agent"]
    name: str
    front_end: FrontEnd
    level: AccessLevel = AccessLevel.NONE
    user_id: str | None = None
    via: str | None = None  # the admin acting for an agent (`--as`), kept in the audit trail

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"

    def describe(self) -> str:
        if self.is_agent:
            return f"agent {self.name}" + (f" (via {self.via})" if self.via else "")
        return f"{self.name} ({self.level.label})"

    def acting_as(self, agent: str, config: ClusterConfig) -> Requester:
        """An admin acting for an agent: the agent's authority applies, the admin stays on record."""
        if self.is_agent or self.level < AccessLevel.ADMIN:
            raise NotAllowed(f"only an admin may act for an agent; {self.describe()} may not use --as {agent}")
        config.require_agent(agent)
        return Requester(kind="agent", name=agent, front_end=self.front_end, via=self.name, user_id=self.user_id)


def level_for_roles(role_ids: Iterable[str | int], config: ClusterConfig) -> AccessLevel:
    """The highest level any of a member's Discord roles grants."""
    held = {str(role) for role in role_ids}
    level = AccessLevel.NONE
    for name, ids in config.roles.items():
        if held.intersection(ids):
            level = max(level, AccessLevel[name.upper()])
    return level


def host_operator(front_end: FrontEnd = "cli") -> Requester:
    """Whoever runs the CLI on the host: they can drive systemd anyway, so they are admin."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        login = "unknown"
    return Requester(kind="person", name=f"{login}@host", front_end=front_end, level=AccessLevel.ADMIN)


def api_requester(identity: str, config: ClusterConfig) -> Requester:
    """The caller behind a loopback API token: an agent by name, or a person at a fixed level."""
    if config.agent(identity) is not None:
        return Requester(kind="agent", name=identity, front_end="api")
    level = AccessLevel.ADMIN if identity == "admin" else AccessLevel.OPERATOR
    return Requester(kind="person", name=identity, front_end="api", level=level)
