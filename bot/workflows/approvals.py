"""Approval gates: who may approve, the starter rule, quorum over distinct approvers, and expiry policies."""

from __future__ import annotations

from dataclasses import dataclass

from bot.authz import AccessLevel, Requester
from bot.workflows.definition import ApprovalSpec


@dataclass(frozen=True)
class Starter:
    """Who started a run, as far as the starter rule needs to know."""

    kind: str
    name: str
    user_id: str | None


def approver_key(requester: Requester) -> str:
    """One key per approver, for "distinct approvers" and the double-click check: a Discord id when known.

    Identities are of three kinds that never match each other: a Discord user (by id), a host login or API identity
    (by name: `antoine@host`, `operator`) and an agent. atomizer-hq cannot tell that a Discord user and a host login
    are one person: the limitation is documented (docs/workflows.md, approvals)."""
    if requester.is_agent:
        return f"agent:{requester.name}"
    return f"user:{requester.user_id}" if requester.user_id else f"person:{requester.name}"


def is_starter(requester: Requester, starter: Starter) -> bool:
    """Same identity: by Discord id when both have one; by name only when neither has (two host logins or API
    identities): a Discord display name is chosen freely, so it never matches a login by name."""
    if requester.kind != starter.kind:
        return False
    if requester.user_id or starter.user_id:
        return requester.user_id == starter.user_id
    return requester.name == starter.name


def matches(requester: Requester, approver: str) -> bool:
    """Whether one approver entry (role:<level>, user:<id>, agent:<name>) names this requester."""
    kind, _, value = approver.partition(":")
    if kind == "role":
        return not requester.is_agent and requester.level >= AccessLevel[value.upper()]
    if kind == "user":
        return not requester.is_agent and requester.user_id == value
    if kind == "agent":
        return requester.is_agent and requester.name == value
    return False


def describe_approvers(approvers: list[str]) -> str:
    words = []
    for approver in approvers:
        kind, _, value = approver.partition(":")
        if kind == "role":
            words.append(f"a person with the {value} role or above")
        elif kind == "user":
            words.append(f"<@{value}>")
        else:
            words.append(f"agent {value}")
    return ", ".join(words)


def refusal(
    requester: Requester,
    approvers: list[str],
    spec: ApprovalSpec,
    starter: Starter,
    step: str,
    decision: str = "approve",
) -> str | None:
    """Why this requester may not decide this gate (`decision`: approve or reject, as the refusal says it), naming
    who may; None when they may."""
    if not any(matches(requester, approver) for approver in approvers):
        return f"{requester.describe()} may not {decision} {step}; who may: {describe_approvers(approvers)}"
    if is_starter(requester, starter) and not spec.starter_may_approve:
        return (
            f"{requester.describe()} started this run and may not {decision} its own gate {step} "
            f"(starter_may_approve is false); who may: {describe_approvers(approvers)}, other than the starter"
        )
    return None
