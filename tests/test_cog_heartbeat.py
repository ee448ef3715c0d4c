"""/heartbeat, /standup and #daily-standup through discord.py's interaction pipeline, on a simulated fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest

from bot.authz import AccessLevel, Requester
from bot.discord_bot import AtomizerBot
from bot.heartbeat import EPOCH, FOREVER
from bot.services import Services
from bot.simulator import SimulatedFleet
from bot.standup import standup_for
from tests.conftest import ServicesOnFleet
from tests.discord_harness import (
    SlashDriver,
    give_level,
    guild_of,
    make_member,
    running_test_bot,
    send_message,
    single_message,
)

DAILY_STANDUP = 100000000000000103  # channels.daily_standup in the shipped config
STANDUP_TARGET = f"channel:{DAILY_STANDUP}"
MANAGER_ACCOUNT = "100000000000000301"  # manager's discord_user_id
OPERATOR = Requester(kind="person", name="antoine", front_end="discord", level=AccessLevel.OPERATOR)


@dataclass
class Rig:
    bot: AtomizerBot
    services: Services
    fleet: SimulatedFleet
    driver: SlashDriver
    standup_channel: discord.TextChannel
    sent: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (channel id, payload) of channel posts

    def member(self, level: AccessLevel, name: str | None = None) -> discord.Member:
        return give_level(make_member(self.bot, name or level.label), level, self.services.config)

    def posted_in_standup(self) -> list[dict[str, Any]]:
        return [payload for channel_id, payload in self.sent if channel_id == DAILY_STANDUP]

    async def state(self, agent: str) -> Any:
        return await self.services.store.fetchone("SELECT * FROM heartbeat_state WHERE agent = ?", (agent,))


@pytest.fixture
async def rig(services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    services, fleet = await services_on_fleet(specs={"webster": {"model_ok": False}})
    async with running_test_bot(services) as bot:
        channel = dpytest.backend.make_text_channel("daily-standup", guild_of(bot), id_num=DAILY_STANDUP)
        rig = Rig(bot, services, fleet, SlashDriver(bot), channel)
        # Record channel posts as they go on the wire (dpytest does not keep allowed mentions).
        http = type(bot.http)
        send_message = http.send_message

        async def recording_send(self: Any, channel_id: int, *, params: Any) -> Any:
            rig.sent.append((int(channel_id), dict(params.payload or {})))
            channel = bot.get_channel(int(channel_id))  # noqa: F841 - dpytest finds the channel in its caller's locals
            return await send_message(self, channel_id, params=params)

        monkeypatch.setattr(http, "send_message", recording_send)
        yield rig


# --- /heartbeat list --------------------------------------------------------------------------------


async def test_list_shows_schedule_policy_next_run_and_last_result(rig: Rig) -> None:
    viewer = rig.member(AccessLevel.VIEWER)
    before = single_message(await rig.driver.invoke("heartbeat list", user=viewer))
    assert before.ephemeral and before.allowed_mentions == {"parse": []}
    fields = {f.name: f.value for f in before.embeds[0].fields}
    assert list(fields) == ["💓 manager", "💓 webster"]  # only the agents atomizer-hq sends heartbeats for
    manager = fields["💓 manager"]
    assert "every 30 min 00 s · method agent · missed slots: skip" in manager
    assert "next: <t:" in manager and "last: none yet" in manager

    await rig.services.heartbeats.run_now(OPERATOR, "webster")  # its model credentials are gone
    after = single_message(await rig.driver.invoke("heartbeat list", user=viewer))
    fields = {f.name: f.value for f in after.embeds[0].fields}
    webster = fields["❌ webster"]
    assert "last: ❌ **run_failed** (manual" in webster
    assert "hook accepted, run failed" in webster
    assert "live ✅ → ready ✅ → hook accepted ✅ → run completed ❌" in webster
    assert "1 failed in a row" in webster


async def test_list_needs_the_viewer_level(rig: Rig) -> None:
    [answer] = await rig.driver.invoke("heartbeat list", user=make_member(rig.bot, "newcomer"))
    assert answer.ephemeral and "viewer" in answer.text


# --- /heartbeat run ----------------------------------------------------------------------------------


async def test_run_defers_then_shows_every_level_verified(rig: Rig) -> None:
    calls = await rig.driver.invoke("heartbeat run", user=rig.member(AccessLevel.OPERATOR, "antoine"),
                                    options={"agent": "manager"})  # fmt: skip
    assert calls[0].type == 5 and not calls[0].ephemeral  # deferred: a run waits for the agent to complete it
    answer = single_message(calls)
    assert "**manager** heartbeat, run by antoine: ✅ **ok** (manual) — completed" in answer.text
    assert "live ✅ → ready ✅ → hook accepted ✅ → run completed ✅" in answer.text
    assert "runId `" in answer.text and answer.allowed_mentions == {"parse": []}
    [hook] = rig.fleet.received("manager")
    assert (hook.body["channel"], hook.body["to"]) == ("discord", STANDUP_TARGET)
    [run] = await rig.services.heartbeats.runs_since(EPOCH)
    assert (run.agent, run.trigger, run.status) == ("manager", "manual", "ok")


async def test_run_of_an_agent_whose_runs_fail_shows_where_it_stopped(rig: Rig) -> None:
    calls = await rig.driver.invoke("heartbeat run", user=rig.member(AccessLevel.ADMIN), options={"agent": "webster"})
    answer = single_message(calls)
    assert "❌ **run_failed**" in answer.text
    assert "live ✅ → ready ✅ → hook accepted ✅ → run completed ❌" in answer.text


async def test_run_of_a_down_agent_stops_at_live(rig: Rig) -> None:
    await rig.fleet.take_down("manager")
    answer = single_message(
        await rig.driver.invoke("heartbeat run", user=rig.member(AccessLevel.OPERATOR), options={"agent": "manager"})
    )
    assert "❌ **down**" in answer.text and "live ❌ → ready ▫️" in answer.text


async def test_run_needs_the_operator_level(rig: Rig) -> None:
    [answer] = await rig.driver.invoke(
        "heartbeat run", user=rig.member(AccessLevel.VIEWER), options={"agent": "manager"}
    )
    assert answer.ephemeral and "operator" in answer.text
    assert rig.fleet.received("manager") == []


async def test_run_for_an_agent_without_a_job_is_refused_privately_before_deferring(rig: Rig) -> None:
    [answer] = await rig.driver.invoke(
        "heartbeat run", user=rig.member(AccessLevel.OPERATOR), options={"agent": "tech-lead"}
    )
    assert answer.type == 4 and answer.ephemeral
    assert "atomizer-hq sends no heartbeat for tech-lead" in answer.text
    [unknown] = await rig.driver.invoke("heartbeat run", user=rig.member(AccessLevel.OPERATOR), options={"agent": "x"})
    assert unknown.ephemeral and "manager" in unknown.text  # the valid names


async def test_autocomplete_offers_only_agents_with_a_job(rig: Rig) -> None:
    admin = rig.member(AccessLevel.ADMIN)
    for command in ("heartbeat run", "heartbeat pause", "heartbeat resume"):
        [suggested] = await rig.driver.autocomplete(command, "agent", "", user=admin)
        assert suggested.type == 8 and [c["value"] for c in suggested.choices] == ["manager", "webster"]
    [typed] = await rig.driver.autocomplete("heartbeat run", "agent", "web", user=admin)
    assert [c["value"] for c in typed.choices] == ["webster"]


# --- /heartbeat pause and resume ----------------------------------------------------------------------


async def test_pause_for_a_while_then_resume(rig: Rig) -> None:
    admin = rig.member(AccessLevel.ADMIN, "antoine")
    paused = single_message(
        await rig.driver.invoke("heartbeat pause", user=admin, options={"agent": "webster", "duration": "2h"})
    )
    assert not paused.ephemeral  # in the channel: people should know why webster went quiet
    assert paused.text.startswith("⏸️ Heartbeats for **webster** paused until <t:") and "by antoine" in paused.text
    state = await rig.state("webster")
    assert state["paused_until"] and state["paused_until"] != FOREVER and state["paused_by"] == "antoine"
    listing = single_message(await rig.driver.invoke("heartbeat list", user=admin))
    assert "⏸️ webster" in {f.name for f in listing.embeds[0].fields}

    resumed = single_message(await rig.driver.invoke("heartbeat resume", user=admin, options={"agent": "webster"}))
    assert resumed.text.startswith("▶️ Heartbeats for **webster** resumed by antoine; next <t:")
    assert (await rig.state("webster"))["paused_until"] is None

    again = single_message(await rig.driver.invoke("heartbeat resume", user=admin, options={"agent": "webster"}))
    assert again.ephemeral and again.text == "webster's heartbeats are not paused; they already run; nothing changed."


async def test_pausing_a_paused_agent_again_says_so_privately_and_records_nothing(rig: Rig) -> None:
    admin, other = rig.member(AccessLevel.ADMIN, "antoine"), rig.member(AccessLevel.ADMIN, "vera")
    await rig.driver.invoke("heartbeat pause", user=admin, options={"agent": "manager"})

    again = single_message(await rig.driver.invoke("heartbeat pause", user=other, options={"agent": "manager"}))

    assert again.ephemeral and again.text == "manager's heartbeats are already paused until resumed; nothing changed."
    assert (await rig.state("manager"))["paused_by"] == "antoine"


async def test_pause_without_a_duration_lasts_until_resumed(rig: Rig) -> None:
    answer = single_message(
        await rig.driver.invoke("heartbeat pause", user=rig.member(AccessLevel.ADMIN), options={"agent": "manager"})
    )
    assert "paused until resumed" in answer.text
    assert (await rig.state("manager"))["paused_until"] == FOREVER


@pytest.mark.parametrize(("duration", "why"), [("30", "has no unit"), ("0", "no pause"), ("400d", "longer than")])
async def test_a_bad_duration_is_refused_privately(rig: Rig, duration: str, why: str) -> None:
    [answer] = await rig.driver.invoke(
        "heartbeat pause", user=rig.member(AccessLevel.ADMIN), options={"agent": "manager", "duration": duration}
    )
    assert answer.ephemeral and why in answer.text
    assert await rig.state("manager") is None


@pytest.mark.parametrize("command", ["heartbeat pause", "heartbeat resume"])
async def test_pause_and_resume_need_the_admin_level(rig: Rig, command: str) -> None:
    [answer] = await rig.driver.invoke(command, user=rig.member(AccessLevel.OPERATOR), options={"agent": "manager"})
    assert answer.ephemeral and "admin" in answer.text
    assert await rig.state("manager") is None


# --- /standup ----------------------------------------------------------------------------------------


async def test_standup_previews_privately(rig: Rig) -> None:
    calls = await rig.driver.invoke("standup", user=rig.member(AccessLevel.VIEWER))
    assert calls[0].type == 5 and calls[0].ephemeral
    preview = single_message(calls)
    assert preview.ephemeral and preview.allowed_mentions == {"parse": []}
    embeds = preview.embeds
    assert embeds[0].title and embeds[0].title.startswith("Daily standup · 24 h to ")
    assert sum(len(e.fields) for e in embeds) == 8
    assert rig.posted_in_standup() == []


async def test_standup_post_puts_one_message_in_the_standup_channel(rig: Rig) -> None:
    calls = await rig.driver.invoke("standup", user=rig.member(AccessLevel.OPERATOR, "antoine"), options={"post": True})
    answer = single_message(calls)
    assert answer.ephemeral and f"Posted the standup in <#{DAILY_STANDUP}>" in answer.text
    [post] = rig.posted_in_standup()
    assert 1 <= len(post["embeds"]) <= 10
    assert post["allowed_mentions"] == {"parse": []}
    assert "webster" in str(post["embeds"])
    [audit] = await rig.services.store.fetchall(
        "SELECT actor, front_end, decision FROM audit_log WHERE action = 'standup.post'"
    )
    assert tuple(audit) == ("antoine", "discord", "allowed")


async def test_standup_post_needs_the_operator_level(rig: Rig) -> None:
    [answer] = await rig.driver.invoke("standup", user=rig.member(AccessLevel.VIEWER), options={"post": True})
    assert answer.ephemeral and "operator" in answer.text
    assert rig.posted_in_standup() == []


async def test_the_daily_post_goes_through_the_cog_once_a_day(rig: Rig) -> None:
    standup = standup_for(rig.services)
    assert standup.post is not None  # the cog registered its poster when it loaded
    first = await standup.post_scheduled()
    assert first is not None and len(rig.posted_in_standup()) == 1
    assert await standup.post_scheduled() is None  # today's is out: not again
    assert len(rig.posted_in_standup()) == 1
    await rig.bot.remove_cog("Heartbeat")
    assert standup.post is None  # without the cog there is no Discord to post with


# --- #daily-standup: agents' own heartbeats ------------------------------------------------------------


async def test_an_agents_post_in_daily_standup_marks_its_heartbeat_seen(rig: Rig) -> None:
    agent = make_member(rig.bot, "Manager bot", user_id=MANAGER_ACCOUNT, is_bot=True)
    person = rig.member(AccessLevel.ADMIN, "antoine")
    other = dpytest.backend.make_text_channel("technical", guild_of(rig.bot), id_num=100000000000000101)

    await dpytest.message("morning, everyone", channel=rig.standup_channel, member=person)
    await send_message(rig.bot, "HEARTBEAT_OK", channel=other, member=agent)
    assert await rig.state("manager") is None  # a person, or another channel: nothing seen

    await send_message(rig.bot, "HEARTBEAT_OK: all quiet", channel=rig.standup_channel, member=agent)
    state = await rig.state("manager")
    assert state is not None and state["last_seen_at"] is not None


async def test_a_seen_agent_that_was_missing_is_announced_back(rig: Rig) -> None:
    agent = make_member(rig.bot, "Manager bot", user_id=MANAGER_ACCOUNT, is_bot=True)
    await rig.services.store.execute("INSERT INTO heartbeat_state (agent, seen_alerted) VALUES ('manager', 1)")
    await send_message(rig.bot, "back", channel=rig.standup_channel, member=agent)
    [alert] = await rig.services.store.fetchall("SELECT kind, text FROM alerts")
    assert (alert["kind"], alert["text"]) == ("heartbeat_recovered", "manager: its own heartbeat is back")
