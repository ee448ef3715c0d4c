"""One delegation through every front end: slash command, CLI, API and delegate.sh.

Each must reach the same core decision and leave the same record shape, so a person reading the
audit trail or `atomizer-hq delegations` cannot tell the front ends apart except by `front_end`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord.ext.test as dpytest
import httpx
import pytest

from bot.api import LoopbackApi
from bot.authz import AccessLevel
from bot.delegation import chain_footer
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import SimulatedFleet
from tests.conftest import API_TOKENS, HOOKS_TOKEN, ServicesOnFleet
from tests.discord_harness import SlashDriver, give_level, guild_of, make_member, running_test_bot
from tests.test_cli import relocated_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "delegate.sh"
# What differs between two records of the same request made through two front ends.
PER_RECORD = {"id", "run_id", "created_at", "updated_at", "accepted_at", "next_attempt_at", "expires_at",
              "latency_ms", "front_end", "requester", "root"}  # fmt: skip


@dataclass
class FrontEnds:
    services: Services
    fleet: SimulatedFleet
    api: LoopbackApi
    config_path: Path
    settings: Settings

    async def _run(self, *argv: str, env: dict[str, str]) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIZER_")}
        env.update(ATOMIZER_HOOKS_TOKEN=HOOKS_TOKEN, ATOMIZER_DB=str(self.settings.db_path), **extra)
        return env

    async def cli(self, *args: str) -> tuple[int, str, str]:
        return await self._run(sys.executable, "-m", "bot", "--config", str(self.config_path), *args, env=self.env())

    async def script(self, identity: str, *args: str) -> tuple[int, str, str]:
        env = self.env(ATOMIZER_API_URL=self.api.url, ATOMIZER_API_TOKEN=API_TOKENS[identity])
        return await self._run("bash", str(SCRIPT), *args, env=env)

    async def http(self, identity: str, to: str, message: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.api.url, trust_env=False, timeout=10) as client:
            headers = {"Authorization": f"Bearer {API_TOKENS[identity]}"}
            return await client.post("/v1/delegations", headers=headers, json={"to": to, "message": message})

    async def records(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in reversed(await self.services.delegation.recent(limit=100))]

    async def refusals(self) -> list[tuple[str, str, str]]:
        rows = await self.services.store.fetchall(
            "SELECT actor, front_end, detail FROM audit_log WHERE decision = 'refused' ORDER BY id"
        )
        return [(r["actor"], r["front_end"], r["detail"]) for r in rows]


@pytest.fixture
async def ends(services_on_fleet: ServicesOnFleet, settings: Settings, tmp_path: Path) -> AsyncIterator[FrontEnds]:
    services, fleet = await services_on_fleet()
    api = LoopbackApi(services, settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES]))
    await api.start("127.0.0.1", 0)
    path = relocated_config(tmp_path, {a.name: a.port for a in services.config.agents})
    try:
        yield FrontEnds(services, fleet, api, path, settings)
    finally:
        await api.stop()


async def test_an_accepted_delegation_leaves_the_same_record_through_every_front_end(ends: FrontEnds) -> None:
    message = "Mesh the M2 mirror"
    # 1. Slash command, from an operator in #technical.
    async with running_test_bot(ends.services) as bot:
        technical = dpytest.backend.make_text_channel("technical", guild_of(bot), id_num=100000000000000101)
        operator = give_level(make_member(bot, "antoine"), AccessLevel.OPERATOR, ends.services.config)
        await SlashDriver(bot).invoke(
            "delegate", user=operator, channel=technical, options={"agent": "nx-expert", "instruction": message}
        )
    # 2. The CLI on the host; 3. the API and 4. delegate.sh with the operator's token.
    code, _, err = await ends.cli("delegate", "nx-expert", message)
    assert code == 0, err
    assert (await ends.http("operator", "nx-expert", message)).status_code == 202
    code, _, err = await ends.script("operator", "nx-expert", message)
    assert code == 0, err

    records = await ends.records()
    assert [r["front_end"] for r in records] == ["discord", "cli", "api", "api"]
    shapes = [{k: v for k, v in r.items() if k not in PER_RECORD} for r in records]
    assert all(shape == shapes[0] for shape in shapes), shapes
    assert shapes[0]["status"] == "accepted" and shapes[0]["target"] == "channel:100000000000000101"
    assert all(set(r) == set(records[0]) for r in records)
    assert [r["requester"]["kind"] for r in records] == ["person"] * 4
    # The agent got four runs, each with the same normalized delivery.
    runs = ends.fleet.received("nx-expert")
    assert len(runs) == 4
    assert [(h.body["channel"], h.body["to"], h.body["message"]) for h in runs] == [
        ("discord", "channel:100000000000000101", message + chain_footer(r["id"])) for r in records
    ]


async def test_a_refusal_is_the_same_decision_through_every_front_end(ends: FrontEnds) -> None:
    reason_api = (await ends.http("tech-lead", "manager", "Approve the budget")).json()["detail"]
    code, out, err = await ends.script("tech-lead", "manager", "Approve the budget")
    assert code == 1
    reason_script = (out + err).strip()
    code, out, err = await ends.cli("delegate", "--as", "tech-lead", "manager", "Approve the budget")
    assert code == 1
    reason_cli = (out + err).strip()

    assert reason_api.startswith("tech-lead may not delegate to manager")
    assert reason_api in reason_script
    assert reason_api in reason_cli
    assert await ends.records() == []
    actors = [(actor, front_end) for actor, front_end, _ in await ends.refusals()]
    assert actors == [("tech-lead", "api"), ("tech-lead", "api"), ("tech-lead", "cli")]
    assert ends.fleet.received() == []
