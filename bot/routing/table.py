"""The routing table as plain text: one row per agent, every filter, the verdict (CLI, /route, refusals)."""

from __future__ import annotations

from bot.routing.router import FILTERS, RouteDecision, RouteRow

_HEAD = ("agent", "capable", "authority", "ready", "silence", "in flight", "accepted", "verdict")


def table_lines(decision: RouteDecision, width: int = 120) -> list[str]:
    """The explanation, then the table; each line at most `width` characters (a cell that does not fit is cut)."""
    cells = [_HEAD, *(_cells(row) for row in decision.rows)]
    widths = [max(len(line[column]) for line in cells) for column in range(len(_HEAD) - 1)]
    lines = [decision.explanation]
    for line in cells:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1]
        lines.append(text if len(text) <= width else text[: max(1, width - 1)] + "…")
    return lines


def _cells(row: RouteRow) -> tuple[str, ...]:
    def verdict_of(name: str, fine: str) -> str:
        return "no" if name in row.refusals else fine

    cap = f"/{row.cap}" if row.cap is not None else ""
    return (
        row.agent,
        verdict_of("capabilities", "yes"),
        verdict_of("authority", "yes"),
        verdict_of("ready", "yes"),
        "silenced" if "silence" in row.refusals else "-",
        f"{row.in_flight}{cap}",
        f"{row.accepted}/{row.ended}" if row.ended else "-",
        _verdict(row),
    )


def _verdict(row: RouteRow) -> str:
    waits = [until for name, until in (("ready", "it is ready"), ("cap", "it has room")) if name in row.refusals]
    if row.rank == 1:
        return f"chosen (queued until {' and '.join(waits)})" if waits else "chosen"
    if row.rank is not None:
        return f"could wait, #{row.rank}" if waits else f"eligible, #{row.rank}"
    return "; ".join(row.refusals[name] for name in FILTERS if name in row.refusals)
