"""How the fleet's status reads: one table for the terminal, one JSON document for scripts.

Discord's embed is built from the same rows (`fleet_rows`), so every front end shows the same facts.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bot.cluster import AgentStatus, FleetStatus

COLUMNS = ("agent", "state", "port", "model", "latency", "release", "detail")
STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "degraded": "yellow",
    "down": "red",
    "foreign": "magenta",
}


def agent_row(agent: AgentStatus) -> dict[str, str]:
    readiness = agent.readiness
    latency = "-" if readiness.state == "down" else f"{readiness.latency_s * 1000:.0f} ms"
    return {
        "agent": agent.name,
        "state": agent.state,
        "port": str(agent.port),
        "model": agent.model or "-",
        "latency": latency,
        "release": readiness.release or ("-" if readiness.health_routes or agent.state != "ready" else "2026.2.x"),
        "detail": readiness.detail,
    }


def fleet_rows(fleet: FleetStatus) -> list[dict[str, str]]:
    return [agent_row(agent) for agent in fleet.agents]


def fleet_summary(fleet: FleetStatus) -> str:
    states = ("ready", "starting", "degraded", "down", "foreign")
    counts = ", ".join(f"{fleet.count(s)} {s}" for s in states if fleet.count(s))
    return f"{len(fleet.agents)} agents: {counts} (probed in {fleet.took_s:.2f} s)"


def fleet_json(fleet: FleetStatus) -> dict[str, Any]:
    return {
        "agents": [
            {
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
            for a in fleet.agents
        ],
        "counts": {s: fleet.count(s) for s in STATE_STYLE},
        "took_ms": round(fleet.took_s * 1000, 1),
    }


def format_fleet_plain(fleet: FleetStatus) -> str:
    rows = [dict(zip(COLUMNS, COLUMNS, strict=True)), *fleet_rows(fleet)]
    widths = {c: max(len(r[c]) for r in rows) for c in COLUMNS}
    lines = ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join([*lines, "", fleet_summary(fleet)])


def print_fleet_status(fleet: FleetStatus, *, as_json: bool = False) -> None:
    """JSON for scripts; a coloured table on a terminal; plain aligned text otherwise."""
    if as_json:
        print(json.dumps(fleet_json(fleet), indent=2))
        return
    if not sys.stdout.isatty():
        print(format_fleet_plain(fleet))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Atomizer-HQ fleet", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, no_wrap=column != "detail")
    for row in fleet_rows(fleet):
        style = STATE_STYLE.get(row["state"], "")
        cells = [escape(row[c]) for c in COLUMNS]
        if style:
            cells[1] = f"[{style}]{cells[1]}[/]"
        table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print(fleet_summary(fleet))
