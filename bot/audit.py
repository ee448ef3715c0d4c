"""The audit trail: one row per decision any front end made, written the same way by every service."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.authz import Requester
from bot.clock import iso

_INSERT = (
    "INSERT INTO audit_log (at, actor_kind, actor, front_end, action, subject, decision, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
Statement = tuple[str, tuple[Any, ...]]


def audit_row(
    requester: Requester, action: str, subject: str, decision: str, detail: dict[str, Any], at: datetime
) -> Statement:
    """The statement of one audit row (run it alone or inside a transaction); `--as` stays on record as `via`."""
    if requester.via:
        detail = {**detail, "via": requester.via}
    return actor_audit_row(requester.kind, requester.name, requester.front_end, action, subject, decision, detail, at)


def actor_audit_row(
    kind: str, actor: str, front_end: str, action: str, subject: str, decision: str, detail: dict[str, Any],
    at: datetime,
) -> Statement:  # fmt: skip
    """The same for an actor that is no Requester (the scheduler: kind 'system')."""
    return _INSERT, (iso(at), kind, actor, front_end, action, subject[:100], decision, json.dumps(detail))
