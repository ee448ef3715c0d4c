"""Live boards: edited in place, never duplicated, re-posted when deleted, within Discord's limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.boards import (
    FIELD_VALUE_MAX,
    FIELDS_MAX,
    TOTAL_MAX,
    BoardContent,
    BoardField,
    LiveBoard,
    paginate,
)
from bot.cluster import AgentStatus, FleetStatus
from bot.gateway import Readiness
from bot.status_view import AgentOverview, status_board
from bot.store import Store
from tests.boards_fake import MemoryChannelPublisher

CHANNEL = "100000000000000104"


@pytest.fixture
async def store(tmp_path: Path):
    async with Store(tmp_path / "atomizer.db") as opened:
        yield opened


def content(text: str) -> list[BoardContent]:
    return [BoardContent("Board", text)]


async def test_a_board_is_posted_once_then_edited_in_place(store: Store) -> None:
    channel = MemoryChannelPublisher()
    board = LiveBoard("status", CHANNEL, store, channel)
    await board.show(content("all ready"))
    await board.show(content("all ready"))  # nothing changed: no call at all
    await board.show(content("webster down"))
    assert [kind for kind, _ in channel.calls] == ["post", "edit"]
    assert [c.description for c in channel.in_channel(CHANNEL)] == ["webster down"]


async def test_a_restarted_bot_finds_its_board_again(store: Store) -> None:
    channel = MemoryChannelPublisher()
    await LiveBoard("status", CHANNEL, store, channel).show(content("one"))
    await LiveBoard("status", CHANNEL, store, channel).show(content("two"))  # a new process, same database
    assert [kind for kind, _ in channel.calls] == ["post", "edit"]
    assert len(channel.messages) == 1


async def test_a_deleted_board_is_posted_again(store: Store) -> None:
    channel = MemoryChannelPublisher()
    board = LiveBoard("status", CHANNEL, store, channel)
    await board.show(content("one"))
    [message_id] = channel.messages
    del channel.messages[message_id]  # someone deleted it in Discord
    assert await board.message_deleted(message_id) is True
    assert await board.message_deleted("100000000000000999") is False  # not ours
    await board.show(content("one"))
    assert len(channel.messages) == 1 and message_id not in channel.messages
    # Deleted while we were not looking: the next edit finds out and posts again.
    [second] = channel.messages
    del channel.messages[second]
    await board.show(content("two"))
    assert [c.description for c in channel.in_channel(CHANNEL)] == ["two"]


async def test_a_board_that_shrinks_deletes_its_extra_messages(store: Store) -> None:
    channel = MemoryChannelPublisher()
    board = LiveBoard("tasks", CHANNEL, store, channel)
    many = paginate("Tasks", [BoardField(f"T-{i}", "x" * 40) for i in range(60)])
    assert len(many) == 3
    await board.show(many)
    await board.show(paginate("Tasks", [BoardField("T-1", "x")]))
    assert len(channel.messages) == 1
    assert [kind for kind, _ in channel.calls].count("delete") == 2


async def test_a_board_moved_to_another_channel_leaves_the_old_one(store: Store) -> None:
    channel = MemoryChannelPublisher()
    await LiveBoard("status", CHANNEL, store, channel).show(content("x"))
    await LiveBoard("status", "100000000000000105", store, channel).show(content("x"))
    assert channel.in_channel(CHANNEL) == [] and len(channel.in_channel("100000000000000105")) == 1


def test_every_part_stays_within_discords_limits() -> None:
    fields = [BoardField("n" * 300, "v" * 5000) for _ in range(80)]
    parts = paginate("T" * 300, fields, description="d" * 5000, footer="f" * 3000)
    assert len(parts) > 1
    for part in parts:
        assert len(part.fields) <= FIELDS_MAX
        assert part.size() <= TOTAL_MAX
        assert all(len(f.value) <= FIELD_VALUE_MAX for f in part.fields)
    assert sum(len(p.fields) for p in parts) == 80  # nothing dropped


def fleet(latency_s: float, webster: str = "ready") -> list[AgentOverview]:
    agents = [
        AgentStatus(name, port, "Opus 4.6", Readiness(name, state, latency_s, ""))
        for name, port, state in (("manager", 18800, "ready"), ("webster", 18828, webster))
    ]
    return [AgentOverview(status=a, since="2026-11-25T09:00:00+00:00") for a in agents]


def test_the_status_board_changes_on_transitions_not_on_every_probe() -> None:
    def board(latency: float, webster: str = "ready") -> str:
        overview = fleet(latency, webster)
        return status_board(FleetStatus([o.status for o in overview], latency), overview)[0].digest()

    assert board(0.010) == board(0.250)  # another probe, other latencies: same board, no edit
    assert board(0.010) != board(0.010, "down")
