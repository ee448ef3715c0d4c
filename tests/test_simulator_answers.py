"""The simulated fleet answers in Discord as real agents do, when given a poster."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from bot.simulator import RELEASE_LEGACY, SimAgentSpec, SimulatedFleet, free_ports
from tests.conftest import HOOKS_TOKEN

CHANNEL = "100000000000009001"


async def ask(fleet: SimulatedFleet, agent: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        answer = await session.post(
            f"{fleet.urls[agent]}/hooks/agent", json=body, headers={"Authorization": f"Bearer {HOOKS_TOKEN}"}
        )
        return dict(await answer.json())


def delivered(message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, "deliver": True, "channel": "discord", "to": f"channel:{CHANNEL}", **extra}


async def test_agents_post_their_answer_then_complete() -> None:
    posts: list[tuple[str, str, str]] = []
    third = asyncio.Event()

    async def poster(agent: str, channel: str, text: str) -> None:
        posts.append((agent, channel, text))
        if len(posts) == 3:
            third.set()

    port = free_ports(3)
    specs = [
        SimAgentSpec("nx-expert", port, answer_parts=2, answer="120k elements, mesh in /shared/m2.prt"),
        SimAgentSpec("webster", port + 4, release=RELEASE_LEGACY),
        SimAgentSpec("optimizer", port + 8, answer_fails=True),
    ]
    async with SimulatedFleet(specs, HOOKS_TOKEN, poster=poster) as fleet:
        done = await ask(fleet, "nx-expert", delivered("Mesh the M2 mirror.\nMore.", waitForCompletion=True))
        assert done["completion"]["status"] == "ok"
        assert [text for _, _, text in posts] == ["120k elements, mesh", "in /shared/m2.prt"]
        assert {(agent, channel) for agent, channel, _ in posts} == {("nx-expert", CHANNEL)}

        failed = await ask(fleet, "optimizer", delivered("Thermal.", waitForCompletion=True))
        assert failed["completion"]["status"] == "error" and len(posts) == 2  # no answer

        await ask(fleet, "webster", delivered("Find the CTE."))
        await ask(fleet, "nx-expert", {"message": "no delivery", "deliver": False})
        await asyncio.wait_for(third.wait(), 10)  # the legacy agent answers after its 202
        assert posts[2] == ("webster", CHANNEL, "webster: done: Find the CTE.")
        assert len(posts) == 3


async def test_without_a_poster_nothing_is_posted_and_runs_settle_at_once() -> None:
    async with SimulatedFleet([SimAgentSpec("nx-expert", free_ports(1))], HOOKS_TOKEN) as fleet:
        done = await ask(fleet, "nx-expert", delivered("Mesh.", waitForCompletion=True))
        assert done["completion"]["status"] == "ok"
