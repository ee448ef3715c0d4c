"""/delegate and /delegations through discord.py's real pipeline, on real services and a simulated fleet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import discord
import pytest
from discord import app_commands

from bot.authz import AccessLevel, Requester
from bot.clock import iso, utcnow
from bot.config import GatewayConfig
from bot.delegation import DelegationService, chain_footer
from bot.discord_bot import AtomizerBot
from bot.gateway import GatewayClient
from bot.services import Services
from bot.simulator import RELEASE_LEGACY, SimulatedFleet
from cogs.delegation import BRIEF_MAX_BYTES, MAX_INSTRUCTION, PAGE_SIZE, Delegations
from cogs.utils.directory import DiscordGuildDirectory
from cogs.utils.paginator import EMBED_TOTAL_LIMIT, FIELD_VALUE_LIMIT, pack_fields
from tests.conftest import ServicesOnFleet
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

NO_MENTIONS = {"parse": []}
VIEW_TASK_PREFIX = "discord-ui-view-dispatch"  # the name discord.py gives the task running a button callback


# --- harness ----------------------------------------------------------------------------------


@dataclass
class Rig:
    bot: AtomizerBot
    services: Services
    fleet: SimulatedFleet
    driver: SlashDriver
    recorder: Recorder

    @property
    def cog(self) -> Delegations:
        cog = self.bot.get_cog("Delegations")
        # load_extension imports the module afresh, so the class is not this module's `Delegations`.
        assert cog is not None and type(cog).__qualname__ == "Delegations"
        return cast(Delegations, cog)

    @property
    def channel(self) -> discord.TextChannel:
        return guild_of(self.bot).text_channels[0]

    def member(self, level: AccessLevel, name: str | None = None) -> discord.Member:
        return give_level(make_member(self.bot, name or level.label), level, self.services.config)

    async def delegate(self, user: discord.Member, **options: Any) -> list[RecordedCall]:
        return await self.driver.invoke("delegate", user=user, options=options)

    async def click(self, label: str, *, user: discord.Member) -> list[RecordedCall]:
        """Click the newest button labelled `label`, as `user`; returns what the bot sent."""
        store = self.bot._connection._view_store
        found = [
            (message_id, custom_id)
            for message_id, items in store._views.items()
            for (_, custom_id), item in items.items()
            if getattr(item, "label", None) == label and message_id is not None
        ]
        assert found, f"no live button labelled {label!r}"
        message_id, custom_id = max(found)
        message = _message_dict({}, str(self.channel.id), None) | {"id": str(message_id)}
        payload = {
            "id": str(next_snowflake()),
            "application_id": str(self.bot.application_id),
            "type": 3,
            "token": f"interaction-token-{next_snowflake()}",
            "version": 1,
            "attachment_size_limit": 26_214_400,
            "guild_id": str(self.channel.guild.id),
            "channel_id": str(self.channel.id),
            "channel": _channel_dict(self.channel, str(discord.Permissions.all().value)),
            "member": _member_dict(user),
            "app_permissions": str(discord.Permissions.all().value),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.channel.guild.id)},
            "context": 0,
            "message": message,
            "data": {"custom_id": custom_id, "component_type": 2},
        }
        before = len(self.recorder.calls)
        running = {task for task in asyncio.all_tasks() if task.get_name().startswith(VIEW_TASK_PREFIX)}
        self.bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        started = [t for t in asyncio.all_tasks() if t.get_name().startswith(VIEW_TASK_PREFIX) and t not in running]
        assert started, "the click reached no view"
        await asyncio.gather(*started)
        return self.recorder.calls[before:]


Launcher = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def launch(services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Launcher]:
    """A test bot with its cogs on real services over a simulated fleet (options as for start_fleet)."""
    recorder = Recorder()
    # Anything sent outside SlashDriver.dispatch lands here instead of going to Discord; the driver
    # swaps in its own recorder while it runs and puts this one back.
    recorder.install(monkeypatch)
    async with AsyncExitStack() as stack:

        async def start(**fleet_options: Any) -> Rig:
            services, fleet = await services_on_fleet(**fleet_options)
            bot = await stack.enter_async_context(running_test_bot(services))
            return Rig(bot, services, fleet, SlashDriver(bot), recorder)

        yield start


def fields_of(call: RecordedCall) -> dict[str, str]:
    [embed] = call.embeds
    return {f.name or "": f.value or "" for f in embed.fields}


def shape(calls: list[RecordedCall]) -> list[tuple[str, int | None]]:
    return [(call.kind, call.type) for call in calls]


async def delegation_count(services: Services) -> int:
    row = await services.store.fetchone("SELECT count(*) FROM delegations")
    assert row is not None
    return int(row[0])


def person(level: AccessLevel, name: str) -> Requester:
    return Requester(kind="person", name=name, front_end="discord", level=level)


# --- /delegate: the 09:05 path ----------------------------------------------------------------


async def test_an_operator_delegates_and_the_answer_is_routed_back_to_the_channel(launch: Launcher) -> None:
    rig = await launch()
    operator = Requester(kind="person", name="antoine", front_end="discord", level=AccessLevel.OPERATOR)
    for title in ("First", "Second"):
        await rig.services.tasks.add(operator, title)
    calls = await rig.delegate(
        rig.member(AccessLevel.OPERATOR, "Antoine"), agent="nx-expert", instruction="Mesh the M2 mirror", task="T-2"
    )

    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert not calls[0].ephemeral  # the outcome is for the channel
    [run] = rig.fleet.received("nx-expert")
    assert run.body["to"] == f"channel:{rig.channel.id}" and run.body["channel"] == "discord"
    assert run.body["deliver"] is True and run.body["message"] == "Mesh the M2 mirror" + chain_footer("D-1")
    fields = fields_of(calls[1])
    assert fields["Outcome"] == "accepted" and fields["Agent"] == "nx-expert" and fields["Delegation"] == "D-1"
    assert fields["runId"] == f"`{run.run_id}`"
    assert fields["Latency"].endswith(" s") and f"channel:{rig.channel.id}" in fields["Target"]
    assert fields["Task"] == "T-2"
    assert "accepted" in (calls[1].embeds[0].description or "")
    assert calls[1].allowed_mentions == NO_MENTIONS
    [stored] = await rig.services.delegation.recent()
    assert (stored.requester, stored.front_end, stored.task) == ("Antoine", "discord", "T-2")
    assert rig.fleet.received() == [run]  # exactly one run, at nx-expert
    # The task follows its delegation: assigned to nx-expert and in progress, with the delegation listed.
    detail = await rig.services.tasks.show("T-2")
    assert (detail.task.status, detail.task.assignee_text) == ("in_progress", "nx-expert")
    assert [d["id"] for d in detail.delegations] == ["D-1"]


async def test_an_explicit_target_and_no_delivery_reach_the_hook(launch: Launcher) -> None:
    rig = await launch()
    operator = rig.member(AccessLevel.OPERATOR)

    antoine = make_member(rig.bot, "antoine")
    await rig.delegate(operator, agent="nx-expert", instruction="Mesh", target="task_board")
    await rig.delegate(operator, agent="nx-expert", instruction="Think", deliver=False)
    # Discord is asked for the member named (the bot caches none without the members intent).
    await rig.delegate(operator, agent="nx-expert", instruction="Tell him", target="@Antoine")
    await rig.delegate(operator, agent="nx-expert", instruction="Post it", target=f"#{rig.channel.name}")

    first, second, third, fourth = rig.fleet.received("nx-expert")
    task_board = rig.services.config.channels["task_board"]
    assert first.body["to"] == f"channel:{task_board}"
    assert second.body["deliver"] is False and "to" not in second.body
    assert third.body["to"] == f"user:{antoine.id}" and fourth.body["to"] == f"channel:{rig.channel.id}"


async def test_echoed_text_cannot_ping_or_format(launch: Launcher) -> None:
    rig = await launch()
    operator = rig.member(AccessLevel.OPERATOR)

    calls = await rig.delegate(operator, agent="nx-expert", instruction="@everyone **now** <@100000000000000900>")

    instruction = fields_of(calls[1])["Instruction"]
    assert "@everyone" not in instruction and "<@100000000000000900>" not in instruction
    assert "\\*\\*now\\*\\*" in instruction
    assert all(call.allowed_mentions == NO_MENTIONS for call in calls if call.message)
    assert rig.fleet.received("nx-expert")[0].body[
        "message"
    ] == "@everyone **now** <@100000000000000900>" + chain_footer("D-1")


# --- refusals: private, before anything is sent ------------------------------------------------


async def test_a_viewer_is_refused_privately_with_who_could_and_the_refusal_is_audited(launch: Launcher) -> None:
    rig = await launch()

    calls = await rig.delegate(rig.member(AccessLevel.VIEWER, "Vera"), agent="nx-expert", instruction="Mesh")

    assert shape(calls) == [("callback", 4)]  # answered before any defer, so it can be private
    reply = calls[0]
    assert reply.ephemeral and reply.allowed_mentions == NO_MENTIONS
    assert "delegating needs the operator level" in reply.content
    assert "Who could: manager, tech-lead, optimizer, or a person with the operator or admin role" in reply.content
    assert rig.fleet.received() == [] and await delegation_count(rig.services) == 0
    rows = await rig.services.store.fetchall("SELECT actor, subject, decision, front_end FROM audit_log")
    assert [tuple(row) for row in rows] == [("Vera", "nx-expert", "refused", "discord")]


async def test_a_member_without_a_role_is_turned_away_by_the_level_check(launch: Launcher) -> None:
    rig = await launch()

    reply = single_message(await rig.delegate(make_member(rig.bot, "newcomer"), agent="nx-expert", instruction="x"))

    assert reply.ephemeral and "You need the viewer level" in reply.content
    assert rig.fleet.received() == []


async def test_an_unknown_agent_gets_the_closest_match(launch: Launcher) -> None:
    rig = await launch()

    calls = await rig.delegate(rig.member(AccessLevel.OPERATOR), agent="nx-expret", instruction="Mesh")

    assert shape(calls) == [("callback", 4)]
    assert calls[0].ephemeral and "no agent called 'nx-expret'. Did you mean 'nx-expert'?" in calls[0].content
    assert await delegation_count(rig.services) == 0


async def test_an_over_long_instruction_is_refused_before_anything_is_sent(launch: Launcher) -> None:
    rig = await launch()

    calls = await rig.delegate(rig.member(AccessLevel.OPERATOR), agent="nx-expert", instruction="x" * 6001)

    assert shape(calls) == [("callback", 4)]
    assert calls[0].ephemeral and "6,001 characters" in calls[0].content and "brief" in calls[0].content
    assert rig.fleet.received() == [] and await delegation_count(rig.services) == 0


async def test_an_invalid_target_is_refused_privately(launch: Launcher) -> None:
    rig = await launch()

    calls = await rig.delegate(rig.member(AccessLevel.OPERATOR), agent="nx-expert", instruction="x", target="#nowhere")

    assert shape(calls) == [("callback", 4)]
    assert calls[0].ephemeral and "no channel called '#nowhere'" in calls[0].content
    assert rig.fleet.received() == []


async def test_nothing_to_do_is_refused(launch: Launcher) -> None:
    rig = await launch()

    calls = await rig.delegate(rig.member(AccessLevel.OPERATOR), agent="nx-expert")

    assert shape(calls) == [("callback", 4)] and "give an instruction, or attach a brief" in calls[0].content


# --- the brief attachment ---------------------------------------------------------------------


def attachment_payload(
    rig: Rig, user: discord.Member, data: bytes, *, filename: str, content_type: str | None, instruction: str = ""
) -> dict[str, Any]:
    """/delegate agent:nx-expert brief:<file> as Discord sends it: the file itself only in `resolved`."""
    attachment_id = str(next_snowflake())
    options: list[dict[str, Any]] = [{"name": "agent", "type": 3, "value": "nx-expert"}]
    if instruction:
        options.append({"name": "instruction", "type": 3, "value": instruction})
    options.append({"name": "brief", "type": 11, "value": attachment_id})
    payload = rig.driver.build_payload(2, "delegate", user=user, options=options)
    url = f"https://cdn.discordapp.com/attachments/{rig.channel.id}/{attachment_id}/{filename}"
    attachment: dict[str, Any] = {"id": attachment_id, "filename": filename, "size": len(data), "url": url}
    attachment["proxy_url"] = url
    if content_type is not None:
        attachment["content_type"] = content_type
    payload["data"]["resolved"] = {"attachments": {attachment_id: attachment}}
    return payload


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """discord.Attachment.read answered from memory (Discord's CDN is unreachable); records each download."""
    served: dict[str, Any] = {"data": b"", "reads": 0}

    async def read(self: discord.Attachment, *, use_cached: bool = False) -> bytes:
        served["reads"] += 1
        return served["data"]

    monkeypatch.setattr(discord.Attachment, "read", read)
    return served


async def test_a_brief_attachment_becomes_the_instruction(launch: Launcher, downloads: dict[str, Any]) -> None:
    rig = await launch()
    text = "# Brief\n\nMesh the M2 mirror: 42k elements, quad-dominant. Ünïcode kept.\n" + "Detail line.\n" * 2000
    downloads["data"] = text.encode()

    payload = attachment_payload(
        rig, rig.member(AccessLevel.OPERATOR), downloads["data"], filename="brief.md", content_type="text/markdown"
    )
    calls = await rig.driver.dispatch(payload)

    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert fields_of(calls[1])["Outcome"] == "accepted"
    [run] = rig.fleet.received("nx-expert")
    assert run.body["message"] == text.strip() + chain_footer("D-1") and len(text) > MAX_INSTRUCTION
    assert downloads["reads"] == 1


async def test_an_instruction_and_a_brief_are_sent_together(launch: Launcher, downloads: dict[str, Any]) -> None:
    rig = await launch()
    downloads["data"] = b"\xef\xbb\xbfThe details."  # a BOM is not part of the text

    payload = attachment_payload(
        rig,
        rig.member(AccessLevel.OPERATOR),
        downloads["data"],
        filename="notes.txt",
        content_type=None,
        instruction="Read this first.",
    )
    await rig.driver.dispatch(payload)

    assert rig.fleet.received("nx-expert")[0].body["message"] == "Read this first.\n\nThe details." + chain_footer(
        "D-1"
    )


@pytest.mark.parametrize(
    ("filename", "content_type", "data", "expected"),
    [
        ("mirror.png", "image/png", b"\x89PNG\r\n", "is image/png, not text"),
        ("blob.bin", None, b"\x00\x01", "does not look like a text file"),
        ("huge.txt", "text/plain", b"x" * (BRIEF_MAX_BYTES + 1), f"a brief may have at most {BRIEF_MAX_BYTES:,}"),
    ],
)
async def test_a_brief_that_is_not_text_is_refused_before_download(
    launch: Launcher, downloads: dict[str, Any], filename: str, content_type: str | None, data: bytes, expected: str
) -> None:
    rig = await launch()
    downloads["data"] = data

    payload = attachment_payload(
        rig, rig.member(AccessLevel.OPERATOR), data, filename=filename, content_type=content_type
    )
    calls = await rig.driver.dispatch(payload)

    assert shape(calls) == [("callback", 4)]
    assert calls[0].ephemeral and expected in calls[0].content
    assert downloads["reads"] == 0 and rig.fleet.received() == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"caf\xe9 latin-1", "is not UTF-8 text"), (b"text\x00\x00binary", "holds binary data"), (b" \n ", "is empty")],
)
async def test_a_brief_whose_content_is_not_text_is_refused(
    launch: Launcher, downloads: dict[str, Any], data: bytes, expected: str
) -> None:
    rig = await launch()
    downloads["data"] = data

    payload = attachment_payload(
        rig, rig.member(AccessLevel.OPERATOR), data, filename="b.txt", content_type="text/plain"
    )
    calls = await rig.driver.dispatch(payload)

    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert expected in (calls[1].content or "")
    assert rig.fleet.received() == [] and await delegation_count(rig.services) == 0


# --- autocomplete -----------------------------------------------------------------------------


async def test_agent_autocomplete_offers_configured_agents_by_prefix_with_their_model(launch: Launcher) -> None:
    rig = await launch()
    operator = rig.member(AccessLevel.OPERATOR)

    [typed_s] = await rig.driver.autocomplete("delegate", "agent", "s", user=operator)
    [typed_nothing] = await rig.driver.autocomplete("delegate", "agent", "", user=operator)
    [listing] = await rig.driver.autocomplete("delegations list", "agent", "TECH", user=operator)

    assert typed_s.type == 8
    assert [c["value"] for c in typed_s.choices] == ["secretary", "study-builder"]
    assert typed_s.choices[0]["name"] == "secretary — Gemini 2.5 Pro"
    assert [c["value"] for c in typed_nothing.choices] == ["auto", *rig.services.config.agent_names]
    assert [c["value"] for c in listing.choices] == ["tech-lead"]


# --- 09:20: queued while the agent restarts, then delivered, once ------------------------------


async def test_a_delegation_to_a_down_agent_is_queued_then_delivered_in_the_same_conversation(
    launch: Launcher,
) -> None:
    rig = await launch(specs={"webster": {"down": True}})

    calls = await rig.delegate(
        rig.member(AccessLevel.OPERATOR, "Antoine"),
        agent="webster",
        instruction="Find the CTE of Zerodur Class 0 between 20 and 40 °C",
    )

    assert shape(calls) == [("callback", 5), ("followup", None)]
    description = calls[1].embeds[0].description or ""
    assert description.startswith("queued: webster is unavailable (connection refused")
    assert "will retry until <t:" in description
    assert fields_of(calls[1])["Outcome"] == "queued"
    following = set(rig.cog.followups)
    assert len(following) == 1 and rig.recorder.calls == []

    await rig.fleet.bring_up("webster")
    past = iso(utcnow() - timedelta(seconds=1))
    await rig.services.store.execute("UPDATE delegations SET next_attempt_at = ? WHERE status = 'queued'", (past,))
    assert await rig.services.delegation.process_due() == 1
    await asyncio.gather(*following)

    [run] = rig.fleet.received("webster")  # webster ran it once
    [followup] = rig.recorder.calls
    assert followup.kind == "followup" and followup.url == calls[1].url  # same interaction, same conversation
    assert followup.content == f"delivered to webster (runId {run.run_id})"
    assert fields_of(followup)["Outcome"] == "accepted" and followup.allowed_mentions == NO_MENTIONS
    assert rig.cog.followups == set()


async def test_a_queued_delegation_that_expires_says_so(launch: Launcher) -> None:
    rig = await launch(specs={"webster": {"down": True}})
    await rig.delegate(rig.member(AccessLevel.OPERATOR), agent="webster", instruction="Find the CTE")
    following = set(rig.cog.followups)

    past = iso(utcnow() - timedelta(seconds=1))
    await rig.services.store.execute("UPDATE delegations SET expires_at = ?, next_attempt_at = ?", (past, past))
    await rig.services.delegation.process_due()
    # DelegationService._expire does not notify `changed` (reported): wake the waiters as it should.
    async with rig.services.delegation.changed:
        rig.services.delegation.changed.notify_all()
    await asyncio.gather(*following)

    [followup] = rig.recorder.calls
    assert (followup.content or "").startswith("expired: D-1 to webster was not delivered")
    assert fields_of(followup)["Outcome"] == "expired" and rig.fleet.received() == []


async def test_unloading_the_cog_stops_following(launch: Launcher) -> None:
    rig = await launch(specs={"webster": {"down": True}})
    await rig.delegate(rig.member(AccessLevel.OPERATOR), agent="webster", instruction="Find the CTE")
    [task] = rig.cog.followups

    await rig.bot.unload_extension("cogs.delegation")

    assert task.cancelled() and rig.recorder.calls == []


# --- the 3-second window ----------------------------------------------------------------------


async def test_delegate_defers_at_once_while_the_agent_takes_ten_seconds(
    launch: Launcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await launch(specs={"nx-expert": {"latency_ms": 10_000}})
    deferred = asyncio.Event()
    real_defer = discord.InteractionResponse.defer

    async def defer(self: discord.InteractionResponse, **kwargs: Any) -> Any:
        result = await real_defer(self, **kwargs)
        deferred.set()
        return result

    monkeypatch.setattr(discord.InteractionResponse, "defer", defer)
    loop = asyncio.get_running_loop()
    started = loop.time()
    invocation = asyncio.create_task(
        rig.delegate(rig.member(AccessLevel.OPERATOR), agent="nx-expert", instruction="Mesh")
    )

    await deferred.wait()
    assert loop.time() - started < 3.0
    await rig.fleet.wait_in_flight("nx-expert")  # the hook is at the agent, not answered yet
    assert not invocation.done()
    [pending] = await rig.services.delegation.recent()
    assert pending.status == "sending" and rig.fleet.received() == []

    calls = await invocation  # the agent's 10 s admission time is real: the only slow test here
    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert fields_of(calls[1])["Outcome"] == "accepted"
    [done] = await rig.services.delegation.recent()
    assert done.latency_ms is not None and done.latency_ms >= 10_000


# --- unconfirmed: a person decides ------------------------------------------------------------


async def test_an_unconfirmed_delegation_offers_retry_to_operators_only(launch: Launcher) -> None:
    rig = await launch(release={"webster": RELEASE_LEGACY}, specs={"webster": {"reply_delay_ms": 3000}})
    # The legacy gateway starts the run but answers after our read timeout: it may have arrived.
    rig.services.delegation = DelegationService(
        rig.services.config,
        rig.services.store,
        GatewayClient(rig.services.http, rig.services.settings.hooks_token_for, GatewayConfig(read_timeout=0.3)),
    )
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")

    calls = await rig.delegate(operator, agent="webster", instruction="Find the CTE")

    assert fields_of(calls[1])["Outcome"] == "unconfirmed"
    [row] = calls[1].message["components"]
    assert [button["label"] for button in row["components"]] == ["Retry D-1"]
    rig.fleet.set_reply_delay("webster", 0)

    refused = await rig.click("Retry D-1", user=rig.member(AccessLevel.VIEWER))
    assert shape(refused) == [("callback", 6), ("followup", None)]
    assert refused[1].ephemeral and "needs the operator level" in (refused[1].content or "")
    assert len(rig.fleet.received("webster")) == 1

    retried = await rig.click("Retry D-1", user=operator)
    assert shape(retried) == [("callback", 6), ("edit_original", None), ("followup", None)]
    assert retried[1].payload is not None and retried[1].payload.get("components") == []  # the button is spent
    assert fields_of(retried[2])["Outcome"] == "accepted" and "retried by Antoine" in (retried[2].content or "")
    assert len(rig.fleet.received("webster")) == 2  # sent again, on purpose


# --- /delegations -----------------------------------------------------------------------------


async def test_delegations_lists_recent_ones_newest_first_and_pages(launch: Launcher) -> None:
    rig = await launch()
    for number in range(1, 8):
        agent = "webster" if number % 2 else "nx-expert"
        await rig.services.delegation.delegate(person(AccessLevel.OPERATOR, "Antoine"), agent, f"job {number}")
    viewer = rig.member(AccessLevel.VIEWER, "Vera")

    calls = await rig.driver.invoke("delegations list", user=viewer)

    first = single_message(calls)
    assert first.type == 4 and first.ephemeral and first.allowed_mentions == NO_MENTIONS
    [page] = first.embeds
    assert [f.name for f in page.fields] == [f"D-{n} · {'webster' if n % 2 else 'nx-expert'} · accepted"
                                             for n in range(7, 7 - PAGE_SIZE, -1)]  # fmt: skip
    assert "job 7" in (page.fields[0].value or "") and "by Antoine" in (page.fields[0].value or "")
    assert page.footer.text == "Page 1/2"
    [buttons] = first.message["components"]
    assert [(b["label"], b.get("disabled", False)) for b in buttons["components"]] == [
        ("Previous", True),
        ("Next", False),
    ]

    [turned] = await rig.click("Next", user=viewer)
    assert turned.type == 7
    [second] = turned.embeds
    assert [f.name.split(" · ")[0] for f in second.fields] == ["D-2", "D-1"] and second.footer.text == "Page 2/2"

    [someone_else] = await rig.click("Previous", user=rig.member(AccessLevel.VIEWER, "Other"))
    assert someone_else.type == 4 and someone_else.ephemeral and "belong to whoever ran" in (someone_else.content or "")


async def test_delegations_filters_by_agent_status_and_requester(launch: Launcher) -> None:
    rig = await launch(specs={"webster": {"down": True}})
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    await rig.delegate(operator, agent="nx-expert", instruction="Mesh")
    await rig.delegate(operator, agent="webster", instruction="Find the CTE")
    await rig.services.delegation.delegate(person(AccessLevel.OPERATOR, "Someone"), "nx-expert", "other")

    def ids(call: RecordedCall) -> list[str]:
        return [(f.name or "").split(" · ")[0] for f in call.embeds[0].fields]

    by_agent = single_message(await rig.driver.invoke("delegations list", user=operator, options={"agent": "webster"}))
    queued = single_message(await rig.driver.invoke("delegations list", user=operator, options={"status": "queued"}))
    mine = single_message(await rig.driver.invoke("delegations list", user=operator, options={"mine": True}))
    nothing = single_message(await rig.driver.invoke("delegations list", user=operator, options={"status": "failed"}))

    assert ids(by_agent) == ["D-2"] and ids(queued) == ["D-2"] and ids(mine) == ["D-2", "D-1"]
    assert "connection refused" in (by_agent.embeds[0].fields[0].value or "")
    assert ids(nothing) == [] and "No delegations match" in (nothing.embeds[0].description or "")
    assert not nothing.message.get("components")  # one page: no buttons


async def test_delegations_needs_the_viewer_level(launch: Launcher) -> None:
    rig = await launch()

    reply = single_message(await rig.driver.invoke("delegations list", user=make_member(rig.bot, "newcomer")))

    assert reply.ephemeral and "You need the viewer level" in reply.content


# --- /delegations show and cancel: chains -------------------------------------------------------


def agent_requester(name: str) -> Requester:
    return Requester(kind="agent", name=name, front_end="api")


async def test_show_draws_the_chain_and_an_operator_cancels_it(launch: Launcher) -> None:
    rig = await launch(specs={"webster": {"down": True}})
    service = rig.services.delegation
    await service.delegate(agent_requester("manager"), "tech-lead", "Run the M2 study")
    await service.delegate(agent_requester("tech-lead"), "optimizer", "Tune the supports", parent="D-1")
    await service.delegate(agent_requester("optimizer"), "nx-expert", "Mesh `it` @everyone", parent="D-2")
    await service.delegate(agent_requester("tech-lead"), "webster", "Find the CTE", parent="D-1")  # queued
    viewer, operator = rig.member(AccessLevel.VIEWER, "Vera"), rig.member(AccessLevel.OPERATOR, "Antoine")

    shown = single_message(await rig.driver.invoke("delegations show", user=viewer, options={"id": "d-3"}))
    assert shown.ephemeral and shown.allowed_mentions == NO_MENTIONS
    [embed] = shown.embeds
    assert embed.title == "D-3 → nx-expert"
    chain = fields_of(shown)["Chain"]
    lines = chain.removeprefix("```\n").removesuffix("\n```").splitlines()
    assert lines[0] == "chain D-1: chain of 4, 3 deep"
    assert lines[1].startswith("D-1 tech-lead: accepted") and lines[2].startswith("├─ D-2 optimizer: accepted")
    assert lines[3].startswith("│  └─ D-3 nx-expert: accepted") and lines[3].endswith('"Mesh ˋitˋ @everyone"')
    assert lines[4].startswith("└─ D-4 webster: queued")

    refused = single_message(await rig.driver.invoke("delegations cancel", user=viewer, options={"id": "D-1"}))
    assert refused.ephemeral and "operator" in (refused.content or "")
    assert (await service.get("D-4")).status == "queued"

    done = single_message(await rig.driver.invoke("delegations cancel", user=operator, options={"id": "D-1"}))
    assert not done.ephemeral and done.allowed_mentions == NO_MENTIONS
    assert (done.content or "").startswith("cancelled D-1; stopped before they were sent: D-4 (webster); already")
    assert (await service.get("D-4")).status == "expired"
    missing = single_message(await rig.driver.invoke("delegations show", user=viewer, options={"id": "D-99"}))
    assert missing.ephemeral and "no delegation D-99" in (missing.content or "")


# --- registration -----------------------------------------------------------------------------


async def test_commands_are_registered_with_their_options(launch: Launcher) -> None:
    rig = await launch()
    delegate = rig.bot.tree.get_command("delegate")
    group = rig.bot.tree.get_command("delegations")
    assert isinstance(group, app_commands.Group)
    assert [c.name for c in group.commands] == ["list", "show", "cancel"]
    listing = group.get_command("list")
    assert isinstance(delegate, app_commands.Command) and isinstance(listing, app_commands.Command)

    options = {option["name"]: option for option in delegate.to_dict(rig.bot.tree)["options"]}
    assert list(options) == ["agent", "instruction", "target", "deliver", "task", "brief", "needs"]
    assert options["needs"]["autocomplete"] and not options["needs"].get("required")
    assert options["agent"]["required"] and options["agent"]["autocomplete"]
    assert options["instruction"]["max_length"] == MAX_INSTRUCTION and not options["instruction"].get("required")
    assert options["brief"]["type"] == discord.AppCommandOptionType.attachment.value
    statuses = listing.to_dict(rig.bot.tree)["options"][1]["choices"]
    assert [choice["value"] for choice in statuses] == [
        "queued",
        "sending",
        "accepted",
        "failed",
        "unconfirmed",
        "expired",
    ]


# --- the pieces -------------------------------------------------------------------------------


async def test_the_guild_directory_knows_channels_and_the_members_discord_delivered(launch: Launcher) -> None:
    rig = await launch()
    guild = guild_of(rig.bot)
    member = make_member(rig.bot, "antoine", user_id="100000000000000900")
    directory = DiscordGuildDirectory(guild, fallback=rig.services.delegation.directory)
    channel = rig.channel

    assert directory.channel_ids_named(f"#{channel.name.upper()}") == [str(channel.id)]
    assert directory.member_ids_named("antoine") == []  # no members intent: nothing cached them
    directory.remember([member])  # e.g. the member a payload carried
    assert directory.member_ids_named("ANTOINE") == [str(member.id)]
    assert directory.is_channel(str(channel.id)) and not directory.is_member(str(channel.id))
    assert directory.is_member(str(member.id)) and directory.describe(str(member.id)) == "@antoine"
    assert directory.describe(str(channel.id)) == f"#{channel.name}"
    assert channel.name in directory.channel_names() and "antoine" in directory.member_names()
    # Agents' bot accounts are known from the config even when the member cache lacks them.
    webster_id = rig.services.config.require_agent("webster").discord_user_id
    assert webster_id is not None and guild.get_member(int(webster_id)) is None
    assert directory.member_ids_named("webster") == [webster_id] and directory.is_member(webster_id)
    assert directory.describe(webster_id) == "@webster"
    assert directory.describe("123") == "123"


def test_pack_fields_keeps_every_embed_within_discords_limits() -> None:
    fields = [(f"field {n}" * 40, "v" * 5000) for n in range(60)]

    pages = pack_fields("t" * 300, fields, description="d" * 5000, per_page=25)

    assert len(pages) > 1
    for page in pages:
        page.set_footer(text="Page 99/99")
        assert len(page) <= EMBED_TOTAL_LIMIT and len(page.fields) <= 25 and len(page.title or "") <= 256
        assert all(len(f.value or "") <= FIELD_VALUE_LIMIT and len(f.name or "") <= 256 for f in page.fields)
    assert sum(len(page.fields) for page in pages) == 60
    assert len(pack_fields("empty", [])) == 1
