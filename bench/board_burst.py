"""board_burst: 1,000 task updates from 8 agents within 10 s, and the live task board in #task-board.

The core's board machinery as the Tasks cog wires it (TaskBoard listener -> CoalescedBoard -> LiveBoard,
rendered by bot.task_view from the database at redraw time, min_edit_interval_s from the config), in
real time, with a publisher standing in for Discord that counts every call and takes as long as a
Discord edit does. Checked: no message edited twice within the interval, no update lost, and the board
ends on exactly what the database says. Baseline: one edit per update.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field

from bench.common import Bench, Result, fleet_config
from bot.authz import AccessLevel, Requester
from bot.boards import BoardContent, CoalescedBoard, LiveBoard
from bot.clock import utcnow
from bot.simulator import free_ports
from bot.store import Store
from bot.task_view import BOARD_TASKS_MAX, task_board
from bot.taskboard import Task, TaskBoard, TaskEvent
from tests.boards_fake import MemoryChannelPublisher

UPDATES = 1_000
WINDOW_S = 10.0
TASKS_PER_AGENT = 5
DISCORD_CALL_S = 0.1  # a message edit's round trip to Discord
CYCLE = ("in_progress", "review", "in_progress", "blocked", "in_progress", "todo")


@dataclass
class CountingPublisher(MemoryChannelPublisher):
    """A channel in memory that remembers when each message was edited, and is as slow as Discord."""

    edits_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    async def post(self, channel_id: str, content: BoardContent) -> str:
        await asyncio.sleep(DISCORD_CALL_S)
        return await super().post(channel_id, content)

    async def edit(self, channel_id: str, message_id: str, content: BoardContent) -> None:
        self.edits_at[message_id].append(time.monotonic())
        await asyncio.sleep(DISCORD_CALL_S)
        await super().edit(channel_id, message_id, content)

    async def delete(self, channel_id: str, message_id: str) -> None:
        await asyncio.sleep(DISCORD_CALL_S)
        await super().delete(channel_id, message_id)


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(9))
    channel = config.channels[config.taskboard.board_channel]
    interval = config.taskboard.min_edit_interval_s
    async with Store(bench.workdir / "board.db") as store:
        tasks = TaskBoard(config, store)
        publisher = CountingPublisher()
        live = LiveBoard("tasks", channel, store, publisher)

        async def render() -> list[BoardContent]:  # as cogs/tasks.py renders the board
            shown = await tasks.list(open_only=True, limit=BOARD_TASKS_MAX)
            return task_board(shown, await tasks.count(open_only=True), utcnow().date())

        board = CoalescedBoard(live, render, min_interval_s=interval)
        operator = Requester(kind="person", name="bench", front_end="cli", level=AccessLevel.ADMIN)
        owned: dict[str, list[int]] = {}
        for agent in config.agent_names:
            owned[agent] = [
                (await tasks.add(operator, f"{agent} work item {n}", assignee=agent)).id for n in range(TASKS_PER_AGENT)
            ]
        await board.board.show(await render())  # the board as it stands before the burst
        publisher.calls.clear()
        publisher.edits_at.clear()

        async def changed(task: Task, event: TaskEvent) -> None:
            board.request()

        tasks.add_listener(changed)
        expected: dict[int, str] = {}
        agents = config.agent_names
        per_agent = UPDATES // len(agents)
        started = time.monotonic()

        async def agent_updates(index: int, agent: str) -> None:
            me = Requester(kind="agent", name=agent, front_end="task-board")
            for n in range(per_agent):  # evenly spread: one update every WINDOW_S / UPDATES overall
                at = started + (n * len(agents) + index) * WINDOW_S / UPDATES
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                task_id = owned[agent][n % TASKS_PER_AGENT]
                status = CYCLE[(n // TASKS_PER_AGENT) % len(CYCLE)]
                note = f"waiting for input {n}" if status == "blocked" else None
                await tasks.move(me, task_id, status, note=note)
                expected[task_id] = status

        await asyncio.gather(*(agent_updates(i, a) for i, a in enumerate(agents)))
        updates_s = time.monotonic() - started
        await board.settle()
        took_s = time.monotonic() - started
        final_board = await render()
        shown = publisher.in_channel(channel)
        moves = await store.fetchone("SELECT count(*) FROM task_events WHERE action = 'move'")
        stored = {t.id: t.status for t in await tasks.list(limit=500)}
        await board.close()

    calls = len(publisher.calls)
    edits = sum(len(v) for v in publisher.edits_at.values())
    gaps = [b - a for times in publisher.edits_at.values() for a, b in itertools.pairwise(times)]
    min_gap = min(gaps) if gaps else float("inf")
    lost = UPDATES - (int(moves[0]) if moves else 0)
    matches = shown == final_board
    state_ok = all(stored[task_id] == status for task_id, status in expected.items())
    passed = min_gap >= interval and lost == 0 and matches and state_ok
    bench.add(
        Result(
            "board_burst",
            calls,
            "Discord calls",
            UPDATES,
            calls / UPDATES,
            f"<= 1 edit/message/{interval:g} s, none lost",
            passed,
            f"{UPDATES} updates from {len(agents)} agents in {updates_s:.1f} s, board settled at {took_s:.1f} s; "
            f"{edits} edits over {len(publisher.edits_at)} message(s), closest edits of one message "
            f"{min_gap:.2f} s apart; updates lost: {lost}; final board = database: {matches and state_ok}; "
            f"each Discord call {DISCORD_CALL_S * 1000:.0f} ms; baseline: one edit per update",
        )
    )
