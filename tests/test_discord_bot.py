"""The Discord layer's frame, through discord.py's real interaction pipeline: /help, levels, errors, sync."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from pydantic import SecretStr

from bot.authz import AccessLevel
from bot.discord_bot import (
    GENERIC_FAILURE,
    AtomizerBot,
    AtomizerTree,
    _GatewayRetryLine,
    command_level,
    requester_for,
    requester_for_user,
    require_level,
    run_bot,
)
from bot.discord_link import DiscordLink, ReconnectBackoff
from bot.errors import InvalidInput, MissingSecret, UnknownAgent
from bot.logsetup import REDACTED
from bot.services import Services
from tests.conftest import HOOKS_TOKEN
from tests.discord_harness import (
    RecordedCall,
    SlashDriver,
    give_level,
    give_roles,
    make_member,
    running_test_bot,
    single_message,
)

DISCORD_TOKEN = "discord-SECRET-MTIzNDU2Nzg5.abcdef.0123456789"
VIEWER_ROLE, OPERATOR_ROLE, ADMIN_ROLE = "100000000000000201", "100000000000000202", "100000000000000203"


@pytest.fixture
async def bot(services: Services) -> AsyncIterator[AtomizerBot]:
    async with running_test_bot(services) as running:
        yield running


@pytest.fixture
def driver(bot: AtomizerBot) -> SlashDriver:
    return SlashDriver(bot)


def member_at(bot: AtomizerBot, level: AccessLevel, name: str | None = None) -> discord.Member:
    return give_level(make_member(bot, name or level.label), level, bot.services.config)


def add_throwaway_commands(bot: AtomizerBot) -> None:
    """Commands that exist only for these tests, one per level, plus failing ones and a group."""

    @app_commands.command(name="look", description="viewer things")
    @require_level(AccessLevel.VIEWER)
    async def look(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("looked", ephemeral=True)

    @require_level(AccessLevel.OPERATOR)  # above the command decorator: must work too
    @app_commands.command(name="act", description="operator things")
    async def act(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("acted", ephemeral=True)

    @app_commands.command(name="control", description="admin things")
    @require_level(AccessLevel.ADMIN)
    async def control(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("controlled", ephemeral=True)

    @app_commands.command(name="refuse", description="raises a core error")
    @require_level(AccessLevel.VIEWER)
    async def refuse(interaction: discord.Interaction, agent: str) -> None:
        raise UnknownAgent(f"no agent called {agent!r}. Valid agents: manager, tech-lead")

    @app_commands.command(name="crash", description="raises an unexpected error")
    @require_level(AccessLevel.VIEWER)
    async def crash(interaction: discord.Interaction) -> None:
        raise RuntimeError("database exploded")

    @app_commands.command(name="slow", description="defers, then fails")
    @require_level(AccessLevel.VIEWER)
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        raise UnknownAgent("no agent called 'ghost'")

    board = app_commands.Group(name="board", description="a group like /task")
    require_level(AccessLevel.OPERATOR)(board)

    @board.command(name="wipe", description="operator via its group")
    async def wipe(interaction: discord.Interaction, confirm: bool) -> None:
        await interaction.response.send_message(f"wiped={confirm}", ephemeral=True)

    @board.command(name="peek", description="viewer despite its group")
    @require_level(AccessLevel.VIEWER)
    @app_commands.describe(agent="whose column")
    async def peek(interaction: discord.Interaction, agent: str) -> None:
        await interaction.response.send_message(f"peeked at {agent}", ephemeral=True)

    @peek.autocomplete("agent")
    async def peek_agents(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = [n for n in bot.services.config.agent_names if current in n]
        return [app_commands.Choice(name=n, value=n) for n in names]

    for command in (look, act, control, refuse, crash, slow, board):
        bot.tree.add_command(command)


def names_in(call: RecordedCall) -> set[str]:
    return set(re.findall(r"`(/[^`]+)`", call.text))


# --- /help ------------------------------------------------------------------------------------


async def test_help_shows_an_admin_more_than_a_viewer(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)

    viewer = single_message(await driver.invoke("help", user=member_at(bot, AccessLevel.VIEWER)))
    admin = single_message(await driver.invoke("help", user=member_at(bot, AccessLevel.ADMIN)))

    assert {"/help", "/look", "/board peek"} <= names_in(viewer)
    assert not {"/act", "/control", "/board wipe"} & names_in(viewer)
    assert {"/help", "/look", "/act", "/control", "/board wipe", "/board peek"} <= names_in(admin)
    fields = admin.embeds[0].fields
    levels = [f.name for f in fields if not f.name.endswith(" (continued)")]
    assert levels == ["Everyone", "Viewer", "Operator", "Admin"]  # a long level goes on in a "(continued)" field
    assert all(len(f.value) <= 1024 for f in fields)
    assert "(admin)" in admin.embeds[0].description and "(viewer)" in viewer.embeds[0].description


async def test_help_tells_a_member_without_a_role_which_role_to_get(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)

    reply = single_message(await driver.invoke("help", user=make_member(bot, "newcomer")))

    assert reply.content is not None
    assert "viewer" in reply.content and f"<@&{VIEWER_ROLE}>" in reply.content
    assert names_in(reply) == {"/help"}


async def test_help_replies_ephemerally_and_pings_nobody(bot: AtomizerBot, driver: SlashDriver) -> None:
    calls = await driver.invoke("help", user=member_at(bot, AccessLevel.VIEWER))

    assert len(calls) == 1
    reply = calls[0]
    assert reply.kind == "callback" and reply.type == 4
    assert reply.ephemeral
    assert reply.allowed_mentions == {"parse": []}


# --- levels -----------------------------------------------------------------------------------


async def test_require_level_refuses_a_viewer_naming_the_level(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)

    reply = single_message(await driver.invoke("act", user=member_at(bot, AccessLevel.VIEWER)))

    assert reply.ephemeral and reply.allowed_mentions == {"parse": []}
    assert "operator level" in reply.content and "you are viewer" in reply.content
    assert f"<@&{OPERATOR_ROLE}>" in reply.content
    assert "acted" not in reply.text


async def test_require_level_lets_a_higher_level_through(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)

    reply = single_message(await driver.invoke("act", user=member_at(bot, AccessLevel.ADMIN)))

    assert reply.content == "acted"


async def test_group_level_binds_its_subcommands(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)
    viewer = member_at(bot, AccessLevel.VIEWER)

    refused = single_message(await driver.invoke("board wipe", user=viewer, options={"confirm": True}))
    peeked = single_message(await driver.invoke("board peek", user=viewer, options={"agent": "webster"}))
    wiped = single_message(
        await driver.invoke("board wipe", user=member_at(bot, AccessLevel.OPERATOR), options={"confirm": True})
    )

    assert "operator level" in refused.content
    assert peeked.content == "peeked at webster"
    assert wiped.content == "wiped=True"


async def test_autocomplete_answers_with_choices(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)

    calls = await driver.autocomplete("board peek", "agent", "exp", user=member_at(bot, AccessLevel.VIEWER))

    assert [call.type for call in calls] == [8]
    assert calls[0].choices == [{"name": "nx-expert", "value": "nx-expert"}]


async def test_autocomplete_is_refused_below_the_level(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)

    calls = await driver.autocomplete("board peek", "agent", "", user=make_member(bot, "newcomer"))

    assert calls == []  # an autocomplete interaction cannot carry a refusal message


async def test_levels_come_from_the_configured_roles(bot: AtomizerBot) -> None:
    add_throwaway_commands(bot)
    tree = bot.tree

    assert command_level(tree.get_command("help")) is AccessLevel.NONE
    assert command_level(tree.get_command("look")) is AccessLevel.VIEWER
    assert command_level(tree.get_command("act")) is AccessLevel.OPERATOR
    assert command_level(tree.get_command("board").get_command("wipe")) is AccessLevel.OPERATOR
    assert command_level(tree.get_command("board").get_command("peek")) is AccessLevel.VIEWER
    both = give_roles(make_member(bot, "both"), [VIEWER_ROLE, ADMIN_ROLE])
    assert requester_for_user(both, bot.services.config).level is AccessLevel.ADMIN


# --- the tree's error handler -----------------------------------------------------------------


async def test_core_error_becomes_an_ephemeral_reply_with_its_message(
    bot: AtomizerBot, driver: SlashDriver, caplog: pytest.LogCaptureFixture
) -> None:
    add_throwaway_commands(bot)

    with caplog.at_level(logging.INFO, logger="bot.discord_bot"):
        calls = await driver.invoke("refuse", user=member_at(bot, AccessLevel.VIEWER), options={"agent": "ghost"})

    reply = single_message(calls)
    assert reply.content == "no agent called 'ghost'. Valid agents: manager, tech-lead"
    assert reply.ephemeral and reply.allowed_mentions == {"parse": []}
    assert not any(record.exc_info for record in caplog.records)


async def test_core_error_after_defer_goes_to_an_ephemeral_followup(bot: AtomizerBot, driver: SlashDriver) -> None:
    add_throwaway_commands(bot)

    calls = await driver.invoke("slow", user=member_at(bot, AccessLevel.VIEWER))

    assert [(call.kind, call.type) for call in calls] == [("callback", 5), ("followup", None)]
    assert calls[1].content == "no agent called 'ghost'"
    assert calls[1].ephemeral and calls[1].allowed_mentions == {"parse": []}


async def test_unexpected_error_is_logged_and_answered_generically(
    bot: AtomizerBot, driver: SlashDriver, caplog: pytest.LogCaptureFixture
) -> None:
    add_throwaway_commands(bot)

    with caplog.at_level(logging.ERROR, logger="bot.discord_bot"):
        calls = await driver.invoke("crash", user=member_at(bot, AccessLevel.VIEWER))

    reply = single_message(calls)
    assert reply.content == GENERIC_FAILURE
    assert reply.ephemeral and reply.allowed_mentions == {"parse": []}
    assert "exploded" not in reply.text
    logged = [r for r in caplog.records if r.name == "bot.discord_bot" and r.exc_info]
    assert len(logged) == 1 and "crash" in logged[0].getMessage()
    assert isinstance(logged[0].exc_info[1], RuntimeError)


async def test_a_traceback_holding_a_secret_is_logged_redacted(
    bot: AtomizerBot, driver: SlashDriver, caplog: pytest.LogCaptureFixture
) -> None:
    @app_commands.command(name="spill", description="an exception that carries a token")
    async def spill(interaction: discord.Interaction) -> None:
        raise RuntimeError(f"request failed: Authorization: Bearer {HOOKS_TOKEN}")

    bot.tree.add_command(spill)

    with caplog.at_level(logging.ERROR, logger="bot.discord_bot"):
        reply = single_message(await driver.invoke("spill", user=member_at(bot, AccessLevel.VIEWER)))

    assert reply.content == GENERIC_FAILURE
    assert "Traceback" in caplog.text and "RuntimeError" in caplog.text and REDACTED in caplog.text
    assert HOOKS_TOKEN not in caplog.text


async def test_core_error_text_never_echoes_a_secret(bot: AtomizerBot, driver: SlashDriver) -> None:
    @app_commands.command(name="leak", description="a careless error message")
    async def leak(interaction: discord.Interaction) -> None:
        raise UnknownAgent(f"token was {HOOKS_TOKEN}")

    bot.tree.add_command(leak)

    reply = single_message(await driver.invoke("leak", user=member_at(bot, AccessLevel.VIEWER)))

    assert HOOKS_TOKEN not in reply.text and REDACTED in reply.content


# --- registration and sync --------------------------------------------------------------------


async def test_help_is_registered_with_a_description(bot: AtomizerBot) -> None:
    command = bot.tree.get_command("help")

    assert isinstance(command, app_commands.Command)
    assert command.to_dict(bot.tree)["description"]
    assert isinstance(bot.tree, AtomizerTree)


async def _setup_with_recorded_sync(services: Services, *, sync_commands: bool) -> list[dict[str, Any]]:
    """Run the bot's setup_hook with Discord's bulk-upsert route replaced by a recorder."""
    sent: list[dict[str, Any]] = []

    async def bulk_upsert_guild_commands(application_id: int, guild_id: int, *, payload: list[Any]) -> list[Any]:
        sent.append({"application_id": application_id, "guild_id": guild_id, "payload": payload})
        return [dict(command, id="1", application_id=str(application_id), version="1") for command in payload]

    bot = AtomizerBot(services, sync_commands=sync_commands)
    try:
        await bot._async_setup_hook()
        bot._connection.application_id = 4242
        bot.http.bulk_upsert_guild_commands = bulk_upsert_guild_commands  # type: ignore[method-assign]
        await bot.setup_hook()
    finally:
        await bot.close()
    return sent


async def test_setup_syncs_the_commands_to_the_guild(services: Services) -> None:
    sent = await _setup_with_recorded_sync(services, sync_commands=True)

    assert len(sent) == 1
    assert sent[0]["application_id"] == 4242
    assert sent[0]["guild_id"] == int(services.settings.guild_id)
    assert "help" in {command["name"] for command in sent[0]["payload"]}


async def test_setup_does_not_sync_when_told_not_to(services: Services) -> None:
    assert await _setup_with_recorded_sync(services, sync_commands=False) == []


# --- the bot's defaults -----------------------------------------------------------------------


async def test_bot_states_its_intents_and_mentions(services: Services) -> None:
    fresh = AtomizerBot(services)
    intents = fresh.intents

    assert intents.guilds and intents.guild_messages and intents.message_content
    assert not intents.members and not intents.presences and not intents.dm_messages
    assert fresh.allowed_mentions is not None and fresh.allowed_mentions.to_dict() == {"parse": []}
    assert fresh.help_command is None and fresh.sync_commands is True
    assert fresh.services is services
    assert isinstance(fresh.tree, AtomizerTree)
    await fresh.close()


async def test_test_bot_keeps_the_default_allowed_mentions(bot: AtomizerBot, driver: SlashDriver) -> None:
    @app_commands.command(name="careless", description="forgets allowed_mentions")
    async def careless(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("@everyone look")

    bot.tree.add_command(careless)

    reply = single_message(await driver.invoke("careless", user=member_at(bot, AccessLevel.VIEWER)))

    assert reply.allowed_mentions == {"parse": []}


async def test_run_bot_without_a_token_says_what_to_set(services: Services) -> None:
    assert services.settings.discord_token is None
    with pytest.raises(MissingSecret, match="DISCORD_TOKEN"):
        await run_bot(services)


@pytest.fixture
def fake_discord(monkeypatch: pytest.MonkeyPatch, services: Services) -> dict[str, Any]:
    """Discord's login and gateway replaced: `login` fails as `login_errors` say, then the connection
    lasts until the bot is closed; close is real."""
    seen: dict[str, Any] = {"tokens": [], "closed": asyncio.Event(), "on_start": None, "login_errors": []}
    real_close = AtomizerBot.close

    async def close(self: AtomizerBot) -> None:
        seen["closed"].set()
        await real_close(self)

    async def login(self: AtomizerBot, token: str) -> None:
        seen["tokens"].append(token)
        if seen["login_errors"]:
            raise seen["login_errors"].pop(0)

    async def connect(self: AtomizerBot, *, reconnect: bool = True) -> None:
        await self.on_ready()
        if seen["on_start"] is not None:
            seen["on_start"]()
        await seen["closed"].wait()

    monkeypatch.setattr(AtomizerBot, "close", close)
    monkeypatch.setattr(AtomizerBot, "login", login)
    monkeypatch.setattr(AtomizerBot, "connect", connect)
    monkeypatch.setattr(services.settings, "discord_token", SecretStr(DISCORD_TOKEN))
    return seen


async def test_run_bot_closes_the_bot_on_sigterm_and_leaves_services_open(
    services: Services, fake_discord: dict[str, Any]
) -> None:
    fake_discord["on_start"] = lambda: os.kill(os.getpid(), signal.SIGTERM)

    await run_bot(services)

    assert fake_discord["tokens"] == [DISCORD_TOKEN]
    assert fake_discord["closed"].is_set()
    assert not services.http.closed
    assert asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM) is False  # handler removed


async def test_run_bot_stops_when_its_stop_event_is_set(services: Services, fake_discord: dict[str, Any]) -> None:
    stop = asyncio.Event()
    fake_discord["on_start"] = stop.set

    await run_bot(services, stop=stop)

    assert fake_discord["closed"].is_set()


async def test_run_bot_turns_a_refused_token_into_a_clear_error(
    services: Services, fake_discord: dict[str, Any]
) -> None:
    fake_discord["login_errors"] = [discord.LoginFailure("Improper token has been passed.")]

    with pytest.raises(InvalidInput, match="refused DISCORD_TOKEN") as caught:
        await run_bot(services, backoff=ReconnectBackoff(base_s=0.001, cap_s=0.001))

    assert DISCORD_TOKEN not in str(caught.value)
    assert fake_discord["tokens"] == [DISCORD_TOKEN]  # not retried: a refusal is not an outage


def unreachable(host: str = "discord.com") -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey(host, 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(-2, "Name or service not known"))


async def test_run_bot_rides_out_an_outage_one_line_per_attempt_then_connects(
    services: Services, fake_discord: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    health_during_outage: list[str] = []
    fake_discord["login_errors"] = [unreachable(), unreachable(), discord.DiscordServerError(_Response(502), "")]
    link = DiscordLink()
    real_down = link.down

    def down(reason: str) -> None:
        real_down(reason)
        if "retrying" in reason:
            health_during_outage.append(reason)

    link.down = down  # type: ignore[method-assign]

    async def connected() -> None:
        checks = await services.health.run()
        assert checks["discord"] == "ok"
        stop.set()

    fake_discord["on_start"] = lambda: asyncio.ensure_future(connected())
    caplog.set_level(logging.INFO)

    await run_bot(services, stop=stop, link=link, backoff=ReconnectBackoff(base_s=0.001, cap_s=0.001))

    assert fake_discord["tokens"] == [DISCORD_TOKEN] * 4  # three failed logins, then the one that held
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 3
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in retries)
    assert "cannot reach Discord: Cannot connect to host discord.com:443" in retries[0].getMessage()
    assert "503" not in retries[2].getMessage() and "502" in retries[2].getMessage()
    assert len(health_during_outage) == 3 and health_during_outage[0].startswith("cannot reach Discord")
    assert fake_discord["closed"].is_set()


async def test_healthz_names_discord_down_with_the_reason_during_an_outage(
    services: Services, fake_discord: dict[str, Any]
) -> None:
    stop = asyncio.Event()
    seen: list[str] = []
    fake_discord["login_errors"] = [unreachable()] * 50
    link = DiscordLink()
    waiting = asyncio.Event()
    real_down = link.down

    def down(reason: str) -> None:
        real_down(reason)
        if reason.endswith(" s"):
            waiting.set()

    link.down = down  # type: ignore[method-assign]

    async def watch() -> None:
        await waiting.wait()
        seen.append((await services.health.run())["discord"])
        stop.set()

    watcher = asyncio.ensure_future(watch())
    await run_bot(services, stop=stop, link=link, backoff=ReconnectBackoff(base_s=30, cap_s=30))
    await watcher

    [result] = seen
    assert result.startswith("error: down: cannot reach Discord: Cannot connect to host discord.com:443")
    assert re.search(r"retrying in \d+ s$", result), result


def test_reconnect_backoff_grows_with_jitter_and_is_capped() -> None:
    draws = iter([0.0, 1.0] * 20)
    backoff = ReconnectBackoff(base_s=1, cap_s=60, random=lambda: next(draws))
    delays = [backoff.delay() for _ in range(10)]
    assert delays[:4] == [0.5, 2.0, 2.0, 8.0]  # each in [d/2, d] for d = 1, 2, 4, 8
    assert max(delays) == 60 and min(delays[6:]) == 30  # capped at 60 s, never below half of it
    backoff.reset()
    assert backoff.delay() == 0.5


def test_discord_py_gateway_reconnects_use_the_capped_backoff(caplog: pytest.LogCaptureFixture) -> None:
    """discord.Client.connect builds its backoff from discord.client.ExponentialBackoff: ours, capped."""
    backoff = discord.client.ExponentialBackoff()
    assert max(backoff.delay() for _ in range(40)) <= 60


def test_a_gateway_reconnect_is_logged_as_one_line_and_marks_discord_down(caplog: pytest.LogCaptureFixture) -> None:
    link = DiscordLink()
    line = _GatewayRetryLine(link)
    logger = logging.getLogger("discord.client")
    logger.addFilter(line)
    try:
        try:
            raise unreachable("gateway.discord.gg")
        except aiohttp.ClientError:
            logger.exception("Attempting a reconnect in %.2fs", 7.4)
    finally:
        logger.removeFilter(line)
    [record] = [r for r in caplog.records if r.name == "discord.client"]
    assert record.exc_info is None and record.levelno == logging.WARNING
    assert record.getMessage().startswith("cannot reach Discord: Cannot connect to host gateway.discord.gg:443")
    assert record.getMessage().endswith("; retrying in 7 s")
    assert link.state == "down" and link.reason == record.getMessage()


class _Response:
    """What discord.HTTPException reads of an aiohttp response."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = "Bad Gateway"


# --- requester_for ----------------------------------------------------------------------------


async def test_requester_for_maps_an_agent_account_to_the_agent(bot: AtomizerBot) -> None:
    agent = make_member(bot, "Webster bot", user_id="100000000000000308", is_bot=True)
    person = member_at(bot, AccessLevel.OPERATOR, "Antoine")

    as_agent = requester_for_user(agent, bot.services.config)
    as_person = requester_for_user(person, bot.services.config)

    assert (as_agent.kind, as_agent.name, as_agent.user_id) == ("agent", "webster", "100000000000000308")
    assert (as_person.kind, as_person.name, as_person.level) == ("person", "Antoine", AccessLevel.OPERATOR)
    assert as_person.front_end == "discord"


async def test_requester_for_reads_the_interaction_user(bot: AtomizerBot, driver: SlashDriver) -> None:
    seen: list[Any] = []

    @app_commands.command(name="whoami", description="echo the requester")
    async def whoami(interaction: discord.Interaction) -> None:
        seen.append(requester_for(interaction, bot.services.config))
        await interaction.response.send_message("ok", ephemeral=True)

    bot.tree.add_command(whoami)

    await driver.invoke("whoami", user=member_at(bot, AccessLevel.ADMIN, "Antoine"))

    assert [(r.kind, r.name, r.level) for r in seen] == [("person", "Antoine", AccessLevel.ADMIN)]


async def test_the_bot_reports_its_connection_and_counts_discord_calls(services: Services) -> None:
    bot = AtomizerBot(services, sync_commands=False, background_tasks=False)
    assert (await services.health.run())["discord"] == "error: connecting: connecting to Discord"
    logging.getLogger("discord.http").warning("We are being rate limited. PATCH /channels/1/messages/2")
    assert services.health.discord.rate_limited == 1
    await bot.close()
