"""How the fleet's status reads: one table for the terminal, one JSON document for scripts.

Discord's embed is built from the same rows (`fleet_rows`), so every front end shows the same facts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.boards import BoardContent, BoardField, paginate
from bot.cluster import AgentStatus, FleetStatus

if TYPE_CHECKING:
    from bot.monitor import AgentHealth, Transition
    from bot.services import Services

COLUMNS = (
    "agent",
    "state",
    "unit",
    "port",
    "model",
    "latency",
    "release",
    "since",
    "up 24h",
    "last delegation",
    "detail",
)
STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "degraded": "yellow",
    "down": "red",
    "foreign": "magenta",
}


def agent_row(agent: AgentStatus, item: AgentOverview | None = None) -> dict[str, str]:
    readiness = agent.readiness
    latency = "-" if readiness.state == "down" else f"{readiness.latency_s * 1000:.0f} ms"
    return {
        "agent": agent.name,
        "state": agent.state,
        "unit": item.unit if item else "-",
        "port": str(agent.port),
        "model": agent.model or "-",
        "latency": latency,
        "release": readiness.release or ("-" if readiness.health_routes or agent.state != "ready" else "2026.2.x"),
        "since": _hhmm(item.since) if item else "-",
        "up 24h": _percent(item.uptime_24h) if item else "-",
        "last delegation": (item.last_delegation or "-") if item else "-",
        "detail": readiness.detail,
    }


def fleet_rows(fleet: FleetStatus, overview: list[AgentOverview] | None = None) -> list[dict[str, str]]:
    items = {item.status.name: item for item in overview or []}
    return [agent_row(agent, items.get(agent.name)) for agent in fleet.agents]


def fleet_summary(fleet: FleetStatus) -> str:
    states = ("ready", "starting", "degraded", "down", "foreign")
    counts = ", ".join(f"{fleet.count(s)} {s}" for s in states if fleet.count(s))
    return f"{len(fleet.agents)} agents: {counts} (probed in {fleet.took_s:.2f} s)"


def fleet_json(fleet: FleetStatus, overview: list[AgentOverview] | None = None) -> dict[str, Any]:
    """One JSON document for scripts (`status --json`, `GET /v1/status`)."""
    items = {item.status.name: item for item in overview or []}
    agents = []
    for a in fleet.agents:
        entry: dict[str, Any] = {
            "name": a.name,
            "state": a.state,
            "port": a.port,
            "model": a.model,
            "latency_ms": None if a.state == "down" else round(a.readiness.latency_s * 1000, 1),
            "release": a.readiness.release,
            "health_routes": a.readiness.health_routes,
            "failing": list(a.readiness.failing),
            "detail": a.readiness.detail,
        }
        item = items.get(a.name)
        if item is not None:
            entry.update(
                since=item.since, uptime_24h=item.uptime_24h, last_delegation=item.last_delegation, unit=item.unit
            )
        agents.append(entry)
    return {
        "agents": agents,
        "counts": {s: fleet.count(s) for s in STATE_STYLE},
        "took_ms": round(fleet.took_s * 1000, 1),
    }


# Columns a narrow terminal may lose, first dropped first: agent, state and detail always stay, since
# they say which agent is in trouble and why.
OPTIONAL_COLUMNS = ("last delegation", "since", "up 24h", "release", "model", "unit", "latency", "port")
_GAP = "  "
# Narrower than this, the detail goes on lines of its own under each agent rather than in a column.
MIN_DETAIL_WIDTH = 16


def terminal_width() -> int | None:
    """The width to fit: the terminal's (or $COLUMNS); None for a pipe, where a row per agent suits grep."""
    if os.environ.get("COLUMNS", "").strip().isdigit() or sys.stdout.isatty():
        return max(shutil.get_terminal_size().columns, 1)
    return None


def fleet_lines(
    fleet: FleetStatus, overview: list[AgentOverview] | None = None, width: int | None = None
) -> list[tuple[str, str | None]]:
    """The status table as lines of at most `width` characters, each with the state it shows (for colour).

    Optional columns go first, then the detail wraps in its column; on a very narrow terminal each agent
    takes a line with its state and the detail follows on lines of its own.
    """
    rows = fleet_rows(fleet, overview)
    header = {c: c for c in COLUMNS}

    def span(columns: list[str]) -> int:
        return sum(max(len(r[c]) for r in [header, *rows]) + len(_GAP) for c in columns)

    detail_len = max(len(r["detail"]) for r in [header, *rows])
    columns = [c for c in COLUMNS if c != "detail"]
    if width is not None:
        wanted = min(detail_len, max(24, width // 3))
        for column in OPTIONAL_COLUMNS:
            if span(columns) + wanted <= width:
                break
            columns.remove(column)
    detail_width = detail_len if width is None else width - span(columns)
    if detail_width < MIN_DETAIL_WIDTH:
        return _two_line_layout(rows, width or 0)
    widths = {c: max(len(r[c]) for r in [header, *rows]) for c in columns}
    indent = " " * span(columns)
    lines: list[tuple[str, str | None]] = []
    for row in [header, *rows]:
        parts = textwrap.wrap(row["detail"], detail_width, break_on_hyphens=False) or [""]
        head = _GAP.join(row[c].ljust(widths[c]) for c in columns) + _GAP
        lines.append(((head + parts[0]).rstrip(), None if row is header else row["state"]))
        lines.extend((indent + part, None) for part in parts[1:])
    return lines


def _two_line_layout(rows: list[dict[str, str]], width: int) -> list[tuple[str, str | None]]:
    name_width = max(len(r["agent"]) for r in rows)
    lines: list[tuple[str, str | None]] = []
    for row in rows:
        lines.append((f"{row['agent']:<{name_width}}{_GAP}{row['state']}", row["state"]))
        lines.extend(("    " + part, None) for part in textwrap.wrap(row["detail"], max(width - 4, 8)))
    return lines


def format_fleet_plain(
    fleet: FleetStatus, overview: list[AgentOverview] | None = None, width: int | None = None
) -> str:
    lines = [line for line, _ in fleet_lines(fleet, overview, width)]
    summary = textwrap.wrap(fleet_summary(fleet), width) if width else [fleet_summary(fleet)]
    return "\n".join([*lines, "", *summary])


def print_fleet_status(
    fleet: FleetStatus, overview: list[AgentOverview] | None = None, *, as_json: bool = False
) -> None:
    """JSON for scripts; aligned text fitted to the terminal, its states coloured on a terminal."""
    if as_json:
        print(json.dumps(fleet_json(fleet, overview), indent=2))
        return
    width = terminal_width()
    if not sys.stdout.isatty():
        print(format_fleet_plain(fleet, overview, width))
        return
    from rich.console import Console
    from rich.text import Text

    # Our own layout, so the state and the detail are never squeezed out; rich only adds the colour.
    console = Console(highlight=False, soft_wrap=True)
    for line, state in fleet_lines(fleet, overview, width):
        text = Text(line)
        if state in STATE_STYLE:  # the second column; agent names hold no spaces
            start = line.index(" " + state) + 1
            text.stylize(STATE_STYLE[state], start, start + len(state))
        console.print(text)
    console.print()
    for line in textwrap.wrap(fleet_summary(fleet), width or 80):
        console.print(line)


# --- the fleet overview: probes plus what the database knows --------------------------------

STATE_ICON = {"ready": "🟢", "starting": "🟡", "degraded": "🟠", "down": "🔴", "foreign": "🟣"}
COLOUR_OK, COLOUR_WARN, COLOUR_BAD = 0x2ECC71, 0xF1C40F, 0xE74C3C


@dataclass(frozen=True)
class AgentOverview:
    """One agent at a glance. `extra` is where later capabilities add their lines (heartbeat, tasks)."""

    status: AgentStatus
    since: str | None = None  # when the current observed state began (ISO)
    uptime_24h: float | None = None
    last_delegation: str | None = None
    silenced_until: str | None = None
    unit: str = "unknown"  # systemd's word on the agent's unit: active, failed, ... or unknown without systemd
    extra: dict[str, str] = field(default_factory=dict)


async def collect_overview(services: Services, fleet: FleetStatus) -> list[AgentOverview]:
    """Join a probe round with the monitor's history and the delegations table."""
    latest = await services.delegation.latest_by_agent()
    units = {u.agent: u.state for u in await services.systemd.states([a.name for a in fleet.agents])}
    last = {name: f"{d.display_id} {d.status} {_hhmm(d.updated_at)}" for name, d in latest.items()}
    overview = []
    for agent in fleet.agents:
        health = await services.monitor.health(agent.name)
        overview.append(
            AgentOverview(
                status=agent,
                since=health.observed_since if health and health.observed == agent.state else None,
                uptime_24h=await services.monitor.uptime(agent.name, 86_400),
                last_delegation=last.get(agent.name),
                silenced_until=health.silenced_until if health else None,
                unit=units.get(agent.name, "unknown"),
            )
        )
    return overview


def _hhmm(text: str | None) -> str:
    return text[11:16] + " UTC" if text else "-"


def _fleet_colour(fleet: FleetStatus) -> int:
    if fleet.count("down") or fleet.count("foreign"):
        return COLOUR_BAD
    return COLOUR_WARN if fleet.count("starting") or fleet.count("degraded") else COLOUR_OK


def status_embed(fleet: FleetStatus, overview: list[AgentOverview]) -> list[BoardContent]:
    """/status: everything, latency and uptime included (a snapshot, not edited later)."""
    fields = []
    for item in overview:
        agent, readiness = item.status, item.status.readiness
        lines = [
            f"**{agent.state}** · :{agent.port} · {agent.model or '-'}"
            + ("" if agent.state == "down" else f" · {readiness.latency_s * 1000:.0f} ms")
            + ("" if item.unit == "unknown" else f" · unit {item.unit}"),
            f"since {_hhmm(item.since)} · up 24 h: "
            + ("-" if item.uptime_24h is None else f"{item.uptime_24h * 100:.1f} %"),
            f"last delegation: {item.last_delegation or '-'}",
            *(f"{name}: {value}" for name, value in item.extra.items()),
        ]
        if agent.state != "ready" and readiness.detail:
            lines.append(readiness.detail)
        fields.append(BoardField(f"{STATE_ICON.get(agent.state, '⚪')} {agent.name}", "\n".join(lines), inline=True))
    return paginate("Atomizer-HQ fleet", fields, description=fleet_summary(fleet), colour=_fleet_colour(fleet))


def status_board(fleet: FleetStatus, overview: list[AgentOverview]) -> list[BoardContent]:
    """The live board in #it-ops: only what changes on a transition, so it is edited only then."""
    fields = []
    for item in overview:
        agent = item.status
        line = f"**{agent.state}** since {_hhmm(item.since)} · :{agent.port} · {agent.model or '-'}"
        if agent.state != "ready" and agent.readiness.detail:
            line += f"\n{agent.readiness.detail}"
        if item.silenced_until:
            line += f"\nalerts silenced until {_hhmm(item.silenced_until)}"
        fields.append(BoardField(f"{STATE_ICON.get(agent.state, '⚪')} {agent.name}", line, inline=True))
    states = ", ".join(f"{fleet.count(s)} {s}" for s in STATE_STYLE if fleet.count(s))
    return paginate(
        "Atomizer-HQ fleet — live", fields, description=f"{len(fleet.agents)} agents: {states}",
        footer="Edited in place on every change. /status for latency and uptime.", colour=_fleet_colour(fleet),
    )  # fmt: skip


def agent_detail(
    item: AgentOverview, uptime_7d: float | None, transitions: list[Transition], health: AgentHealth | None
) -> list[BoardContent]:
    """/status AGENT: one agent in full, with its recent transitions."""
    agent, readiness = item.status, item.status.readiness
    facts = [
        BoardField("state", f"{STATE_ICON.get(agent.state, '⚪')} {agent.state} since {_hhmm(item.since)}", True),
        BoardField("port", str(agent.port), True),
        BoardField("model", agent.model or "-", True),
        BoardField("latency", "-" if agent.state == "down" else f"{readiness.latency_s * 1000:.0f} ms", True),
        BoardField(
            "release", readiness.release or ("2026.2.x (no health routes)" if agent.state == "ready" else "-"), True
        ),
        BoardField("uptime", f"24 h: {_percent(item.uptime_24h)} · 7 d: {_percent(uptime_7d)}", True),
        BoardField("last delegation", item.last_delegation or "-", True),
    ]
    if health is not None:
        facts.append(BoardField("confirmed", f"{health.confirmed} since {_hhmm(health.confirmed_since)}", True))
        if health.silenced_until:
            facts.append(BoardField("alerts", f"silenced until {_hhmm(health.silenced_until)} by {health.silenced_by}"))
    facts.extend(BoardField(name, value, True) for name, value in item.extra.items())
    if readiness.detail:
        facts.append(BoardField("detail", readiness.detail))
    history = "\n".join(f"{t.at[:16].replace('T', ' ')}  {t.from_state or '—'} → {t.to_state}" for t in transitions)
    facts.append(BoardField("recent transitions", history or "none recorded yet"))
    return paginate(f"{agent.name}", facts, colour=COLOUR_OK if agent.state == "ready" else COLOUR_BAD)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"
