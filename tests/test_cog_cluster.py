"""/cluster through discord.py's real pipeline, on real services and the fake systemctl (the 16:00 scenario)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import discord
import pytest

from bot.authz import AccessLevel, Requester
from bot.clock import parse_duration, parse_iso, utcnow
from bot.cluster_control import ClusterControl
from bot.config import ClusterConfig
from bot.discord_bot import AtomizerBot, command_level
from bot.errors import InvalidInput, NotAllowed
from bot.services import Services, open_services
from bot.settings import Settings
from cogs.cluster import INLINE_LOG_LIMIT, Cluster, ConfirmView, log_reply
from tests.conftest import HOOKS_TOKEN
from tests.discord_harness import (
    RecordedCall,
    Recorder,
    SlashDriver,
    _channel_dict,
    _member_dict,
    _message_dict,
    give_level,
    guild_of,
    make_member,
    next_snowflake,
    running_test_bot,
    single_message,
)
from tests.test_cog_delegation import VIEW_TASK_PREFIX, shape
from tests.test_systemd import FakeSystemd

NO_MENTIONS = {"parse": []}
OPTIMIZER = "openclaw-atomizer@optimizer.service"
WEBSTER = "openclaw-atomizer@webster.service"


# --- harness ----------------------------------------------------------------------------------


@dataclass
class Rig:
    bot: AtomizerBot
    services: Services
    fake: FakeSystemd
    driver: SlashDriver
    recorder: Recorder

    @property
    def cog(self) -> Cluster:
        cog = self.bot.get_cog("Cluster")
        assert cog is not None and type(cog).__qualname__ == "Cluster"
        return cast(Cluster, cog)

    @property
    def channel(self) -> discord.TextChannel:
        return guild_of(self.bot).text_channels[0]

    def member(self, level: AccessLevel, name: str | None = None) -> discord.Member:
        return give_level(make_member(self.bot, name or level.label), level, self.services.config)

    async def cluster(self, verb: str, user: discord.Member, **options: Any) -> list[RecordedCall]:
        return await self.driver.invoke(f"cluster {verb}", user=user, options=options)

    def pending(self) -> ConfirmView:
        [view] = list(self.cog.pending)
        return view

    def unit_actions(self) -> list[list[str]]:
        """What the fake systemctl was asked to do to units (state queries left out)."""
        return [call for call in self.fake.calls() if call[0] == "systemctl" and call[1] != "is-active"]

    async def audit(self) -> list[tuple[str, ...]]:
        rows = await self.services.store.fetchall(
            "SELECT actor, front_end, action, subject, decision FROM audit_log ORDER BY id"
        )
        return [tuple(row) for row in rows]

    async def click(self, label: str, *, user: discord.Member) -> list[RecordedCall]:
        """Click the newest live button labelled `label`, as `user`; returns what the bot sent."""
        store = self.bot._connection._view_store
        found = [
            (message_id, custom_id)
            for message_id, items in store._views.items()
            for (_, custom_id), item in items.items()
            if getattr(item, "label", None) == label and message_id is not None
        ]
        assert found, f"no live button labelled {label!r}"
        message_id, custom_id = max(found)
        guild_id = str(self.channel.guild.id)
        payload = {
            "id": str(next_snowflake()),
            "application_id": str(self.bot.application_id),
            "type": 3,
            "token": f"interaction-token-{next_snowflake()}",
            "version": 1,
            "attachment_size_limit": 26_214_400,
            "guild_id": guild_id,
            "channel_id": str(self.channel.id),
            "channel": _channel_dict(self.channel, str(discord.Permissions.all().value)),
            "member": _member_dict(user),
            "app_permissions": str(discord.Permissions.all().value),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id},
            "context": 0,
            "message": _message_dict({}, str(self.channel.id), None) | {"id": str(message_id)},
            "data": {"custom_id": custom_id, "component_type": 2},
        }
        before = len(self.recorder.calls)
        running = {task for task in asyncio.all_tasks() if task.get_name().startswith(VIEW_TASK_PREFIX)}
        self.bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        started = [t for t in asyncio.all_tasks() if t.get_name().startswith(VIEW_TASK_PREFIX) and t not in running]
        assert started, "the click reached no view"
        await asyncio.gather(*started)
        return self.recorder.calls[before:]


def live_labels(bot: AtomizerBot) -> set[str]:
    store = bot._connection._view_store
    return {getattr(item, "label", "") for items in store._views.values() for item in items.values()}


def buttons(call: RecordedCall) -> list[str]:
    return [button["label"] for row in call.message.get("components") or [] for button in row["components"]]


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystemd:
    return FakeSystemd(tmp_path / "systemd")


@pytest.fixture
async def rig(
    settings: Settings, make_config: Callable[..., ClusterConfig], fake: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    """The shipped fleet's config with its `[systemd]` pointing at the fake; no gateway is probed by /cluster."""
    config = make_config(systemd={"systemctl": fake.systemctl, "journalctl": fake.journalctl, "timeout": 30})
    recorder = Recorder()
    recorder.install(monkeypatch)  # clicks and timeouts: what is sent outside SlashDriver.dispatch
    async with open_services(settings, config) as services, running_test_bot(services) as bot:
        yield Rig(bot, services, fake, SlashDriver(bot), recorder)


# --- who may -----------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [AccessLevel.NONE, AccessLevel.VIEWER, AccessLevel.OPERATOR])
async def test_only_admins_may_use_cluster(rig: Rig, level: AccessLevel) -> None:
    user = rig.member(level, "Vera")

    for verb, options in [
        ("restart", {"agent": "optimizer"}),
        ("start", {"agent": "webster"}),
        ("logs", {"agent": "webster"}),
        ("silence", {"agent": "webster", "duration": "2h"}),
    ]:
        reply = single_message(await rig.cluster(verb, user, **options))
        assert reply.ephemeral and "You need the admin level for this command" in (reply.content or ""), verb
    assert rig.fake.calls() == [] and await rig.audit() == []
    assert not rig.cog.pending


async def test_every_cluster_command_declares_the_admin_level(rig: Rig) -> None:
    group = rig.bot.tree.get_command("cluster")
    assert group is not None and not isinstance(group, discord.app_commands.ContextMenu)
    assert isinstance(group, discord.app_commands.Group)
    names = sorted(command.name for command in group.commands)
    assert names == ["logs", "restart", "silence", "start", "stop"]
    assert all(command_level(command) is AccessLevel.ADMIN for command in group.commands)  # type: ignore[arg-type]


# --- 16:00: /cluster restart optimizer ---------------------------------------------------------


async def test_an_admin_restarts_optimizer_after_confirming(rig: Rig) -> None:
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")

    calls = await rig.cluster("restart", antoine, agent="optimizer")

    assert shape(calls) == [("callback", 4)]
    prompt = calls[0]
    assert not prompt.ephemeral and prompt.allowed_mentions == NO_MENTIONS
    assert "**Restart optimizer?**" in (prompt.content or "") and "expires <t:" in (prompt.content or "")
    assert buttons(prompt) == ["Restart optimizer", "Cancel"]
    assert rig.fake.calls() == []  # nothing happens before the click

    view = rig.pending()
    clicked = await rig.click("Restart optimizer", user=antoine)

    assert shape(clicked) == [("callback", 7), ("edit_original", None)]
    assert "Restarting optimizer" in (clicked[0].content or "") and clicked[0].message.get("components") == []
    answer = clicked[1].content or ""
    assert answer.startswith("**restart optimizer**: done (asked by Antoine)")
    assert "✅ optimizer: restarted (active)" in answer
    assert clicked[1].allowed_mentions == NO_MENTIONS
    assert rig.unit_actions() == [["systemctl", "restart", OPTIMIZER]]
    assert rig.fake.state(OPTIMIZER) == "active"
    assert await rig.audit() == [("Antoine", "discord", "cluster.restart", "optimizer", "allowed")]
    assert view.outcome == "confirmed" and view.is_finished() and not rig.cog.pending
    assert "Restart optimizer" not in live_labels(rig.bot)


async def test_an_unanswered_confirmation_expires_and_nothing_happens(rig: Rig) -> None:
    rig.cog.confirm_timeout = 0.05
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")
    await rig.cluster("restart", antoine, agent="optimizer")
    view = rig.pending()

    assert await view.wait() is True  # timed out
    await view.settled.wait()

    assert view.outcome == "expired" and not rig.cog.pending
    [expired] = rig.recorder.calls
    assert expired.kind == "edit_original" and expired.message.get("components") == []
    assert "The confirmation expired" in (expired.content or "") and "optimizer was not restarted" in (
        expired.content or ""
    )
    assert rig.unit_actions() == [] and await rig.audit() == []
    assert "Restart optimizer" not in live_labels(rig.bot)  # a late click reaches nothing


async def test_only_the_admin_who_asked_may_confirm(rig: Rig) -> None:
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")
    other_admin = rig.member(AccessLevel.ADMIN, "Other")
    await rig.cluster("restart", antoine, agent="optimizer")

    refused = await rig.click("Restart optimizer", user=other_admin)

    assert shape(refused) == [("callback", 4)]
    assert refused[0].ephemeral and "Only Antoine, who ran /cluster restart, can confirm" in (refused[0].content or "")
    assert rig.unit_actions() == [] and rig.pending().outcome is None
    assert "Restart optimizer" in live_labels(rig.bot)  # still Antoine's to answer


async def test_cancel_does_nothing(rig: Rig) -> None:
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")
    await rig.cluster("stop", antoine, agent="webster")
    view = rig.pending()

    [cancelled] = await rig.click("Cancel", user=antoine)

    assert cancelled.type == 7 and cancelled.content == "Cancelled: webster was not stopped."
    assert cancelled.message.get("components") == []
    assert view.outcome == "cancelled" and view.is_finished() and view.settled.is_set()
    assert rig.unit_actions() == [] and await rig.audit() == []


async def test_stop_all_confirms_then_stops_every_agent_in_reverse_order(rig: Rig) -> None:
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")
    names = rig.services.config.agent_names
    for name in names:
        rig.fake.set_state(f"openclaw-atomizer@{name}.service", "active")

    [prompt] = await rig.cluster("stop", antoine, agent="all")
    assert f"**Stop all 8 agents ({', '.join(reversed(names))})?**" in (prompt.content or "")

    clicked = await rig.click("Stop all 8 agents", user=antoine)

    assert rig.unit_actions() == [["systemctl", "stop", f"openclaw-atomizer@{n}.service"] for n in reversed(names)]
    answer = clicked[-1].content or ""
    assert answer.startswith("**stop all 8 agents**: done")
    assert all(f"✅ {name}: stopped (inactive)" in answer for name in names)
    assert [row[3] for row in await rig.audit()] == list(reversed(names))


async def test_start_needs_no_confirmation(rig: Rig) -> None:
    calls = await rig.cluster("start", rig.member(AccessLevel.ADMIN, "Antoine"), agent="webster")

    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert "✅ webster: started (active)" in (calls[1].content or "")
    assert rig.unit_actions() == [["systemctl", "start", WEBSTER]]
    assert await rig.audit() == [("Antoine", "discord", "cluster.start", "webster", "allowed")]


async def test_an_unknown_agent_is_refused_before_any_prompt(rig: Rig) -> None:
    reply = single_message(await rig.cluster("restart", rig.member(AccessLevel.ADMIN), agent="optimiser"))

    assert reply.ephemeral and "Did you mean 'optimizer'?" in (reply.content or "")
    assert not rig.cog.pending and rig.fake.calls() == []


async def test_a_failed_restart_says_why_and_is_audited_as_failed(rig: Rig) -> None:
    rig.fake.flag(f"crash@{OPTIMIZER}")
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")
    await rig.cluster("restart", antoine, agent="optimizer")

    clicked = await rig.click("Restart optimizer", user=antoine)

    answer = clicked[-1].content or ""
    assert "1 of 1 failed" in answer and "❌ optimizer: restart failed (failed)" in answer
    assert await rig.audit() == [("Antoine", "discord", "cluster.restart", "optimizer", "failed")]


# --- no systemd --------------------------------------------------------------------------------


async def test_systemd_not_running_is_said_plainly(rig: Rig) -> None:
    rig.fake.flag("no-bus")
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")

    started = await rig.cluster("start", antoine, agent="webster")
    await rig.cluster("restart", antoine, agent="optimizer")
    restarted = await rig.click("Restart optimizer", user=antoine)
    logs = single_message(await rig.cluster("logs", antoine, agent="webster"))

    for text in (started[-1].content or "", restarted[-1].content or ""):
        assert "failed: systemd unavailable (Failed to connect to bus: No medium found)" in text
        assert "systemd is not running for this user" in text and "loginctl enable-linger" in text
    assert logs.ephemeral and "systemd is not running for this user" in (logs.content or "")
    assert [row[2:] for row in await rig.audit()] == [
        ("cluster.start", "webster", "failed"),
        ("cluster.restart", "optimizer", "failed"),
        ("cluster.logs", "webster", "failed"),
    ]


# --- logs --------------------------------------------------------------------------------------


async def test_short_logs_come_inline_redacted_and_private(rig: Rig) -> None:
    rig.fake.journal(WEBSTER, "Started gateway.", f"hooks token is {HOOKS_TOKEN}", "```not a fence```")

    calls = await rig.cluster("logs", rig.member(AccessLevel.ADMIN, "Antoine"), agent="webster", lines=20)

    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert calls[0].ephemeral and calls[1].ephemeral
    content = calls[1].content or ""
    assert content.startswith(f"**webster**: last 20 journal lines of `{WEBSTER}`\n```\n")
    assert content.endswith("\n```") and content.count("```") == 2
    assert "Started gateway." in content and HOOKS_TOKEN not in content and "hooks token is ***" in content
    assert not calls[1].message.get("attachments")
    assert ["journalctl", "-u", WEBSTER, "-n", "20", "--no-pager", "-o", "short-iso"] in rig.fake.calls()
    assert await rig.audit() == [("Antoine", "discord", "cluster.logs", "webster", "allowed")]


async def test_long_logs_come_as_a_file(rig: Rig) -> None:
    rig.fake.journal(WEBSTER, *(f"line {n:03d} " + "x" * 60 for n in range(100)))

    calls = await rig.cluster("logs", rig.member(AccessLevel.ADMIN), agent="webster")

    followup = calls[-1]
    assert followup.ephemeral and "attached" in (followup.content or "") and "```" not in (followup.content or "")
    [attachment] = followup.message["attachments"]
    assert attachment["filename"] == "webster-journal-100.txt"


def test_log_reply_switches_to_a_file_over_the_inline_limit() -> None:
    short, no_file = log_reply("one\ntwo\n", "webster", WEBSTER, 10)
    assert no_file is None and short.endswith("```\none\ntwo\n```")

    text = "".join(f"{n} {'y' * 70}\n" for n in range(40))
    assert len(text) > INLINE_LOG_LIMIT
    content, file = log_reply(text, "webster", WEBSTER, 40)
    assert file is not None and file.filename == "webster-journal-40.txt"
    assert file.fp.read() == text.encode() and "```" not in content

    empty, _ = log_reply("", "webster", WEBSTER, 10)
    assert "no entries" in empty


async def test_bad_log_requests_are_refused(rig: Rig) -> None:
    admin = rig.member(AccessLevel.ADMIN)

    unknown = single_message(await rig.cluster("logs", admin, agent="nobody"))
    too_many = single_message(await rig.cluster("logs", admin, agent="webster", lines=999_999))

    assert unknown.ephemeral and "no agent called 'nobody'" in (unknown.content or "")
    assert too_many.ephemeral and "between 1 and 5000" in (too_many.content or "")
    assert rig.fake.calls() == []


# --- silence -----------------------------------------------------------------------------------


async def test_silence_sets_and_lifts_silenced_until(rig: Rig) -> None:
    antoine = rig.member(AccessLevel.ADMIN, "Antoine")
    before = utcnow()

    [set_] = await rig.cluster("silence", antoine, agent="webster", duration="2h")

    assert set_.type == 4 and not set_.ephemeral and set_.allowed_mentions == NO_MENTIONS
    assert "Alerts for **webster** are silenced until <t:" in (set_.content or "") and "2 h 00 min" in (
        set_.content or ""
    )
    health = await rig.services.monitor.health("webster")
    assert health is not None and health.silenced_until is not None and health.silenced_by == "Antoine"
    until = parse_iso(health.silenced_until)
    assert before + timedelta(hours=2) <= until <= utcnow() + timedelta(hours=2)

    [lifted] = await rig.cluster("silence", antoine, agent="webster", duration="0")

    assert "back on" in (lifted.content or "")
    health = await rig.services.monitor.health("webster")
    assert health is not None and health.silenced_until is None
    audit = await rig.services.store.fetchall("SELECT action, subject, decision, detail FROM audit_log ORDER BY id")
    assert [(r["action"], r["subject"], r["decision"]) for r in audit] == [
        ("cluster.silence", "webster", "allowed")
    ] * 2
    assert json.loads(audit[0]["detail"])["duration_s"] == 7200 and json.loads(audit[1]["detail"])["until"] is None


@pytest.mark.parametrize(
    ("duration", "expected"),
    [("30", "'30' has no unit"), ("soon", "'soon' is not a duration"), ("8d", "up to 7 days")],
)
async def test_silence_refuses_bad_durations(rig: Rig, duration: str, expected: str) -> None:
    reply = single_message(
        await rig.cluster("silence", rig.member(AccessLevel.ADMIN), agent="webster", duration=duration)
    )

    assert reply.ephemeral and expected in (reply.content or "")
    assert await rig.services.monitor.health("webster") is None and await rig.audit() == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("2h", 7200), ("30m", 1800), ("1h30m", 5400), ("90 s", 90), ("1.5 days", 129_600), ("2H", 7200)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "  ", "30", "-1h", "2x", "h", "1h30", "2 h x", "1e400h"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"duration|no unit"):
        parse_duration(text)


# --- autocomplete and the core ------------------------------------------------------------------


async def test_autocomplete_offers_all_only_for_unit_actions(rig: Rig) -> None:
    admin = rig.member(AccessLevel.ADMIN)

    [restart] = await rig.driver.autocomplete("cluster restart", "agent", "", user=admin)
    [logs] = await rig.driver.autocomplete("cluster logs", "agent", "web", user=admin)

    assert [c["value"] for c in restart.choices] == [*rig.services.config.agent_names, "all"]
    assert [c["value"] for c in logs.choices] == ["webster"]


async def test_the_core_refuses_non_admins_and_audits_the_refusal(rig: Rig) -> None:
    services = rig.services
    control = ClusterControl(services.config, services.store, services.systemd, services.monitor)
    agent = Requester(kind="agent", name="tech-lead", front_end="api")
    operator = Requester(kind="person", name="Olga", front_end="api", level=AccessLevel.OPERATOR)

    with pytest.raises(NotAllowed, match="cluster restart needs the admin level; agent tech-lead is not"):
        await control.act(agent, "restart", "optimizer")
    with pytest.raises(NotAllowed, match="admin level"):
        await control.logs(operator, "webster")

    assert rig.fake.calls() == []
    assert await rig.audit() == [
        ("tech-lead", "api", "cluster.restart", "optimizer", "refused"),
        ("Olga", "api", "cluster.logs", "webster", "refused"),
    ]
