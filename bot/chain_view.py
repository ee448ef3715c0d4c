"""A delegation chain drawn as text: the same tree for `delegations show`, /delegations show and the API."""

from __future__ import annotations

from datetime import datetime

from bot.clock import human_duration
from bot.delegation import Delegation, subtree

_MESSAGE_CHARS = 60


def chain_summary(tree: list[Delegation]) -> str:
    """`chain of 4, 3 deep`: how big a root's tree grew (the standup, the tree's head line)."""
    return f"chain of {len(tree)}, {max(node.depth for node in tree)} deep"


def draw_tree(tree: list[Delegation], now: datetime) -> list[str]:
    """The root's tree, one line per delegation under its parent: id, agent, state, age, what it asked."""
    root = min(tree, key=lambda node: node.depth).root
    nodes = subtree(tree, root)
    by_parent: dict[int | None, list[Delegation]] = {}
    for node in nodes:
        by_parent.setdefault(node.parent_id, []).append(node)
    lines = [f"chain D-{root}: {chain_summary(nodes)}"]

    def walk(node: Delegation, lead: str, branch: str) -> None:
        lines.append(f"{lead}{branch}{node_line(node, now)}")
        children = by_parent.get(node.id, [])
        below = lead + ("" if not branch else "   " if branch == "└─ " else "│  ")
        for index, child in enumerate(children):
            walk(child, below, "└─ " if index == len(children) - 1 else "├─ ")

    if nodes:
        walk(nodes[0], "", "")
    return lines


def node_line(node: Delegation, now: datetime) -> str:
    """`D-3 nx-expert: queued, 2 min ago, by optimizer: "Mesh the M2 mirror"`."""
    age = human_duration((now - datetime.fromisoformat(node.created_at)).total_seconds())
    text = node.message.splitlines()[0] if node.message.strip() else ""
    if len(text) > _MESSAGE_CHARS or len(node.message.splitlines()) > 1:
        text = text[: _MESSAGE_CHARS - 1].rstrip() + "…"
    state = node.status + (" (cancelled)" if node.cancelled_at and node.status == "expired" else "")
    return f'{node.display_id} {node.agent}: {state}, {age} ago, by {node.requester}: "{text}"'


def sub_delegation_lines(nodes: list[Delegation], *, limit: int = 6, more: str = "") -> list[str]:
    """A step's sub-delegations (tree order), one short line each, indented by depth: the run card and
    `workflow show`."""
    lines = [f"{'  ' * max(node.depth - 2, 0)}↳ {node.display_id} {node.agent}: {node.status}" for node in nodes]
    if len(lines) > limit:
        lines = [*lines[:limit], f"+{len(nodes) - limit} more{more}"]
    return lines
