"""/status, the live board in #it-ops and alert posting, through discord.py on a simulated fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import discord
import discord.ext.test as dpytest
import pytest

from bot.authz import AccessLevel
from bot.discord_bot import AtomizerBot
from bot.services import Services
from bot.simulator import SimulatedFleet
from cogs.status import Status
from tests.conftest import ServicesOnFleet
from tests.discord_harness import SlashDriver, give_level, guild_of, make_member, running_test_bot

IT_OPS = 100000000000000104


@dataclass(frozen=True)
class Posted:
    data: dict

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def content(self) -> str:
        return self.data.get("content") or ""

    @property
    def text(self) -> str:
        """The board's embed as text."""
        embed = discord.Embed.from_dict(self.data["embeds"][0])
        return "\n".join([embed.title or "", embed.description or ""] + [f"{f.name} {f.value}" for f in embed.fields])


@dataclass
class Rig:
    bot: AtomizerBot
    services: Services
    fleet: SimulatedFleet
    driver: SlashDriver
    it_ops: discord.TextChannel

    @property
    def cog(self) -> Status:
        cog = self.bot.get_cog("Status")
        assert cog is not None
        return cast(Status, cog)

    def member(self, level: AccessLevel) -> discord.Member:
        return give_level(make_member(self.bot, level.label), level, self.services.config)

    def posted(self) -> list[Posted]:
        """#it-ops as Discord holds it (dpytest's backend store, which edits update in place)."""
        return [Posted(m) for m in dpytest.backend._cur_config.messages.get(IT_OPS, [])]


@pytest.fixture
async def rig(services_on_fleet: ServicesOnFleet) -> AsyncIterator[Rig]:
    services, fleet = await services_on_fleet(release={"webster": "2026.2.12"})
    async with running_test_bot(services) as bot:
        it_ops = dpytest.backend.make_text_channel("it-ops", guild_of(bot), id_num=IT_OPS)
        yield Rig(bot, services, fleet, SlashDriver(bot), it_ops)


async def test_status_shows_the_whole_fleet(rig: Rig) -> None:
    await rig.fleet.take_down("auditor")
    calls = await rig.driver.invoke("status", user=rig.member(AccessLevel.VIEWER))
    assert calls[0].type == 5  # deferred first: probing may take up to the probe timeout
    [answer] = [c for c in calls if c.embeds]
    text = answer.text
    assert "8 agents: 7 ready, 1 down" in text
    for agent in rig.services.config.agents:
        assert agent.name in text
    assert "connection refused" in text
    assert answer.allowed_mentions == {"parse": []}


async def test_status_of_one_agent_shows_its_transitions(rig: Rig) -> None:
    await rig.cog.monitor_round()
    await rig.fleet.take_down("webster")
    await rig.cog.monitor_round()
    calls = await rig.driver.invoke("status", user=rig.member(AccessLevel.VIEWER), options={"agent": "webster"})
    [answer] = [c for c in calls if c.embeds]
    assert "recent transitions" in answer.text
    assert "ready → down" in answer.text
    assert "18828" not in answer.text  # the test fleet's real port is shown, not the shipped one
    choices = await rig.driver.autocomplete("status", "agent", "web", user=rig.member(AccessLevel.VIEWER))
    assert [c["value"] for c in choices[-1].choices] == ["webster"]


async def test_status_needs_the_viewer_level(rig: Rig) -> None:
    calls = await rig.driver.invoke("status", user=make_member(rig.bot, "newcomer"))
    [answer] = calls
    assert answer.ephemeral and "viewer" in answer.text


async def test_the_board_is_posted_once_and_edited_only_on_change(rig: Rig) -> None:
    await rig.cog.monitor_round()
    [board] = rig.posted()
    assert "8 agents: 8 ready" in board.text
    await rig.cog.monitor_round()
    await rig.cog.monitor_round()
    assert rig.posted() == [board]
    assert "8 agents: 8 ready" in rig.posted()[0].text

    await rig.fleet.take_down("webster")
    await rig.cog.monitor_round()  # one failed probe: the board shows it, nobody is alerted
    assert len(rig.posted()) == 1
    await rig.cog.monitor_round()  # confirmed: one alert, posted in #it-ops
    messages = rig.posted()
    assert len(messages) == 2
    assert messages[0].id == board.id and "7 ready, 1 down" in messages[0].text
    assert messages[1].content.startswith("🔴 webster is down since")
    await rig.fleet.bring_up("webster")
    await rig.cog.monitor_round()
    assert rig.posted()[-1].content.startswith("🟢 webster is back after")
    assert len(rig.posted()) == 3


async def test_a_deleted_board_is_posted_again(rig: Rig) -> None:
    await rig.cog.monitor_round()
    [board] = rig.posted()
    await rig.it_ops.get_partial_message(board.id).delete()  # dispatches the delete event the cog listens to
    await dpytest.run_all_events()
    [again] = rig.posted()
    assert again.id != board.id and "8 agents: 8 ready" in again.text


async def test_an_alert_discord_refused_is_posted_in_a_later_round(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.cog.monitor_round()
    await rig.fleet.take_down("webster")
    original = discord.TextChannel.send

    async def rate_limited(self: discord.TextChannel, content: str | None = None, **kwargs: object) -> discord.Message:
        if content:  # alerts are text; the board is an embed
            response = type("R", (), {"status": 429, "reason": "Too Many Requests"})()
            raise discord.HTTPException(response, "You are being rate limited.")
        return await original(self, content, **kwargs)

    monkeypatch.setattr(discord.TextChannel, "send", rate_limited)
    await rig.cog.monitor_round()
    await rig.cog.monitor_round()
    assert not any(m.content for m in rig.posted())
    [pending] = await rig.services.monitor.unposted_alerts()
    monkeypatch.setattr(discord.TextChannel, "send", original)
    await rig.cog.monitor_round()
    assert [m.content for m in rig.posted() if m.content] == [f"🔴 {pending.text}"]
    assert await rig.services.monitor.unposted_alerts() == []
