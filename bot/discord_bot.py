"""The Discord front end's frame: the Bot subclass, its command tree, and the access-level checks.

This is the one core module that imports discord.py. It wires the core `Services` into the cogs
(`self.bot.services`) and decides, in one place, how failures look to a Discord user. Everything a
command *does* lives in the core; cogs only translate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import discord
import yarl
from discord import app_commands, http
from discord.ext import commands
from discord.gateway import DiscordWebSocket

from bot.authz import AccessLevel, Requester, level_for_roles
from bot.config import ClusterConfig
from bot.discord_link import DiscordLink, ReconnectBackoff, describe_outage
from bot.errors import AtomizerError, InvalidInput, MissingSecret
from bot.logsetup import Redactor
from bot.services import Services

log = logging.getLogger("bot.discord_bot")

GENERIC_FAILURE = "Something went wrong on our side; it has been logged."
MESSAGE_LIMIT = 2000  # Discord's cap on message content
LEVEL_KEY = "level"  # key in an app command's `extras` holding its minimum AccessLevel
_LEVEL_ATTR = "__atomizer_level__"  # the same, on a callback decorated before it became a Command
NO_MENTIONS = discord.AllowedMentions.none()

T = TypeVar("T")


# --- who is asking ----------------------------------------------------------------------------


def _role_ids(user: discord.abc.User) -> set[int]:
    """The role ids a guild member holds; a DM user holds none.

    `Member._roles` carries the raw ids from the interaction payload, so the level does not depend
    on the guild's role cache being complete (it is not before READY, or for an unavailable guild).
    """
    if not isinstance(user, discord.Member):
        return set()
    ids = {role.id for role in user.roles if not role.is_default()}
    ids.update(int(role_id) for role_id in getattr(user, "_roles", ()))
    return ids


def requester_for_user(user: discord.abc.User, config: ClusterConfig) -> Requester:
    """The core's view of a Discord account: an agent by its bot account, else a person by roles.

    Usable for message authors too (e.g. posts in #task-board), not only for interactions.
    """
    level = level_for_roles(_role_ids(user), config)
    user_id = str(user.id)
    for agent in config.agents:
        if agent.discord_user_id is not None and agent.discord_user_id == user_id:
            return Requester(kind="agent", name=agent.name, front_end="discord", level=level, user_id=user_id)
    return Requester(kind="person", name=user.display_name, front_end="discord", level=level, user_id=user_id)


def requester_for(interaction: discord.Interaction, config: ClusterConfig) -> Requester:
    """The caller of a slash command, as the core's Requester."""
    return requester_for_user(interaction.user, config)


def role_ids_for(level: AccessLevel, config: ClusterConfig) -> tuple[str, ...]:
    """The Discord role ids configured for exactly `level`."""
    return tuple(config.roles.get(level.label, []))  # type: ignore[call-overload]


def role_mentions(level: AccessLevel, config: ClusterConfig) -> str:
    """The Discord roles granting `level`, as mentions (shown as names; never pinged: mentions are off)."""
    return " or ".join(f"<@&{role_id}>" for role_id in role_ids_for(level, config))


# --- access levels on commands ----------------------------------------------------------------


class LevelTooLow(app_commands.CheckFailure):
    """The caller's access level is below the command's; the message says which level is needed."""

    def __init__(self, needed: AccessLevel, have: AccessLevel, roles: str = "") -> None:
        self.needed = needed
        self.have = have
        held = "you have no atomizer-hq role" if have is AccessLevel.NONE else f"you are {have.label}"
        ask = f" Ask an admin for {roles}." if roles else ""
        super().__init__(f"You need the {needed.label} level for this command; {held}.{ask}")


def enforce_level(interaction: discord.Interaction, level: AccessLevel) -> Requester:
    """The caller, if their level is at least `level`; else LevelTooLow (a CheckFailure)."""
    config = _config_of(interaction)
    requester = requester_for(interaction, config)
    if requester.level < level:
        raise LevelTooLow(level, requester.level, role_mentions(level, config))
    return requester


def require_level(level: AccessLevel) -> Callable[[T], T]:
    """Refuse callers below `level`, and record `level` on the command for /help.

    Works above or below `@app_commands.command`. On a Group instance it records the group's level,
    which its subcommands inherit and AtomizerTree enforces. `AccessLevel.NONE` only records the
    level (everyone may run the command), so every command declares its level the same way.
    """

    async def predicate(interaction: discord.Interaction) -> bool:
        enforce_level(interaction, level)
        return True

    def decorator(func: T) -> T:
        target = getattr(func, "__discord_app_commands_unwrap__", func) or func
        if isinstance(target, app_commands.Group):
            target.extras[LEVEL_KEY] = level
            return func
        if isinstance(target, app_commands.Command):
            target.extras[LEVEL_KEY] = level
        else:
            setattr(func, _LEVEL_ATTR, level)
        if level > AccessLevel.NONE:
            return app_commands.check(predicate)(func)  # type: ignore[arg-type]
        return func

    return decorator


def command_level(command: app_commands.Command[Any, ..., Any] | app_commands.Group) -> AccessLevel:
    """A command's declared minimum level; a subcommand without one inherits its group's.

    A command that declares nothing has no level check, so anyone may run it: NONE says exactly that.
    """
    node: app_commands.Command[Any, ..., Any] | app_commands.Group | None = command
    while node is not None:
        if LEVEL_KEY in node.extras:
            return AccessLevel(node.extras[LEVEL_KEY])
        callback = getattr(node, "callback", None)
        if callback is not None and hasattr(callback, _LEVEL_ATTR):
            return AccessLevel(getattr(callback, _LEVEL_ATTR))
        node = node.parent
    return AccessLevel.NONE


def walk_leaf_commands(
    tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None = None
) -> Iterator[app_commands.Command[Any, ..., Any]]:
    """Every invocable slash command (groups expanded), global and guild-scoped, once each."""
    seen: set[str] = set()
    scopes: list[discord.abc.Snowflake | None] = [None] if guild is None else [None, guild]
    for scope in scopes:
        for command in tree.walk_commands(guild=scope):
            if isinstance(command, app_commands.Command) and command.qualified_name not in seen:
                seen.add(command.qualified_name)
                yield command


def _config_of(interaction: discord.Interaction) -> ClusterConfig:
    return interaction.client.services.config  # type: ignore[attr-defined]


# --- one place for how failures look ----------------------------------------------------------


def redact_all(text: str, client: discord.Client) -> str:
    """`text` with every secret the process knows (and anything bearer-like) replaced."""
    redactor: Redactor | None = getattr(client, "redactor", None)
    return redactor(text) if redactor is not None else text


def redact(text: str, client: discord.Client) -> str:
    """`text` redacted and cut to Discord's message limit: safe to put in a reply."""
    text = redact_all(text, client)
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 1] + "…"
    return text


def log_unexpected(what: str, error: BaseException, client: discord.Client) -> None:
    """Log an error with its traceback; if the traceback holds a secret, log a redacted copy instead."""
    formatted = "".join(traceback.format_exception(error))
    cleaned = redact_all(formatted, client)
    if cleaned == formatted:
        log.error("%s", what, exc_info=error)
    else:
        log.error("%s (traceback redacted)\n%s", what, cleaned)


def describe_check_failure(error: app_commands.CheckFailure) -> str:
    """A user-facing sentence for a failed check."""
    if isinstance(error, LevelTooLow):
        return str(error)
    if isinstance(error, app_commands.MissingRole | app_commands.MissingAnyRole):
        return f"You don't have the role this command needs. {error}"
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in the Atomizer-HQ server, not in direct messages."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"This command is cooling down; try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.MissingPermissions | app_commands.BotMissingPermissions):
        return str(error)
    return "You can't use this command here."


class AtomizerTree(app_commands.CommandTree[Any]):
    """The command tree with one error handler: core errors and refusals become ephemeral replies."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        # Every command's level is enforced here too, so a level set on a group (or through
        # `extras`) binds its subcommands: discord.py itself runs only a command's own checks and
        # its immediate parent's interaction_check.
        command = interaction.command
        if isinstance(command, app_commands.Command):
            enforce_level(interaction, command_level(command))
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        original: BaseException = error
        if isinstance(error, app_commands.CommandInvokeError):
            original = error.original
        name = interaction.command.qualified_name if interaction.command is not None else "?"

        if isinstance(original, AtomizerError):
            log.info("/%s refused: %s (%s)", name, original.code, redact(original.message, interaction.client))
            text = original.message
        elif isinstance(original, app_commands.CheckFailure):
            text = describe_check_failure(original)
        elif isinstance(original, app_commands.TransformerError):
            text = f"That value is not valid for this option: {original}"
        elif isinstance(original, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            log.warning("/%s is not known to this version of the bot: %s", name, original)
            text = "This command is out of date; wait a minute for Discord to refresh it and try again."
        else:
            log_unexpected(f"Unexpected error in /{name}", original, interaction.client)
            text = GENERIC_FAILURE

        if interaction.type is discord.InteractionType.autocomplete:
            return  # an autocomplete interaction cannot carry a message
        await send_ephemeral(interaction, redact(text, interaction.client))


async def send_ephemeral(interaction: discord.Interaction, content: str | None = None, **kwargs: Any) -> None:
    """Reply only the caller sees, whether or not the interaction was already answered or deferred."""
    kwargs.setdefault("allowed_mentions", NO_MENTIONS)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=True, **kwargs)
        else:
            await interaction.response.send_message(content, ephemeral=True, **kwargs)
    except discord.HTTPException:
        # Typically the 3 s window or the 15 min token expired; nothing more we can tell the user.
        log.warning("could not send an ephemeral reply for interaction %s", interaction.id, exc_info=True)


# --- the bot ----------------------------------------------------------------------------------


def bot_intents() -> discord.Intents:
    """Only what we use: fewer intents, fewer events, fewer privileged switches in the portal."""
    intents = discord.Intents.none()
    intents.guilds = True  # guild, channel and role cache; slash commands are guild-scoped
    intents.guild_messages = True  # agents' posts in #task-board
    intents.message_content = True  # privileged: needed to read those posts' text
    # members stays off (privileged): the roles that decide a caller's level arrive with every
    # interaction payload, so we never need the member list or join/leave events.
    return intents


class _RateLimitCounter(logging.Filter):
    """discord.py waits out 429s itself and only logs them: count those lines."""

    def __init__(self, counters: Any) -> None:
        super().__init__()
        self.counters = counters

    def filter(self, record: logging.LogRecord) -> bool:
        if "rate limited" in record.getMessage().lower():
            self.counters.rate_limited += 1
        return True


DISCORD_API_BASE = "https://discord.com/api/v10"


DISCORD_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY


def use_discord_api(base: str | None) -> None:
    """Point discord.py's REST calls at `base`, or at Discord; the gateway follows at login (`use_api_gateway`).

    discord.py keeps both addresses on its classes for the whole process; one bot per process makes that fine.
    """
    http.Route.BASE = base or DISCORD_API_BASE
    DiscordWebSocket.DEFAULT_GATEWAY = DISCORD_GATEWAY


async def use_api_gateway(client: discord.Client) -> None:
    """Connect to the gateway the configured API names: a non-sharded discord.py Client never asks, it
    goes to gateway.discord.gg, which would leave a test server or proxy with half of the traffic."""
    _, url, _ = await client.http.get_bot_gateway()
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


class AtomizerBot(commands.Bot):
    """The supervisory bot: wires the core services into the cogs and syncs the guild's commands.

    The bot does not own `services`: whoever opened them (the caller's `async with open_services(...)`)
    closes them, after the bot is closed. That keeps one shutdown order for the bot, the CLI and tests.
    """

    initial_extensions: tuple[str, ...] = (
        "cogs.help", "cogs.delegation", "cogs.status", "cogs.cluster", "cogs.tasks", "cogs.heartbeat",
        "cogs.workflows", "cogs.routing",
    )  # fmt: skip

    def __init__(
        self,
        services: Services,
        *,
        sync_commands: bool = True,
        background_tasks: bool = True,
        link: DiscordLink | None = None,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,  # no prefix commands are planned; slash only
            intents=bot_intents(),
            allowed_mentions=NO_MENTIONS,
            tree_cls=AtomizerTree,
            help_command=None,
        )
        use_discord_api(services.settings.discord_api_base)
        self.services = services
        self.sync_commands = sync_commands
        # Timers (the status monitor, alert posting) run for real; tests drive each round by hand.
        self.background_tasks = background_tasks
        # The same redaction the log formatter applies, for replies and for log handlers that
        # were not set up by bot.logsetup (discord.py's own, pytest's).
        self.redactor = Redactor(services.settings.secret_values())
        self._count_discord_calls()
        # The link outlives this bot object: run_bot makes a new one after a failed login.
        self.link = link if link is not None else DiscordLink()
        services.health.register("discord", self.link.check)

    def _count_discord_calls(self) -> None:
        """Count calls to Discord's API and its 429s for /metrics (discord.py retries 429s itself)."""
        counters = self.services.health.discord
        original = self.http.request

        async def counted(route: Any, **kwargs: Any) -> Any:
            counters.calls[route.method] = counters.calls.get(route.method, 0) + 1
            try:
                return await original(route, **kwargs)
            except discord.HTTPException as exc:
                if exc.status == 429:
                    counters.rate_limited += 1
                else:
                    counters.errors += 1
                raise

        self.http.request = counted  # type: ignore[method-assign]
        self._rate_limit_counter = _RateLimitCounter(counters)
        logging.getLogger("discord.http").addFilter(self._rate_limit_counter)

    async def login(self, token: str) -> None:
        await super().login(token)
        if self.services.settings.discord_api_base is not None:
            await use_api_gateway(self)

    async def setup_hook(self) -> None:
        for extension in self.initial_extensions:
            await self.load_extension(extension)
        guild_id = self.services.settings.guild_id
        if self.sync_commands and guild_id:
            # Guild-scoped commands appear at once; global ones take up to an hour.
            guild = discord.Object(id=int(guild_id))
            self.tree.copy_global_to(guild=guild)
            try:
                synced = await self.tree.sync(guild=guild)
            except discord.Forbidden:
                raise InvalidInput(
                    f"Discord refused to register slash commands in guild {guild_id} (ATOMIZER_GUILD_ID): "
                    "check the id, and invite the bot with the 'bot' and 'applications.commands' scopes"
                ) from None
            log.info("synced %d slash commands to guild %s", len(synced), guild_id)
        elif self.sync_commands:
            log.warning("ATOMIZER_GUILD_ID is not set: slash commands were not synced")

    async def on_ready(self) -> None:
        self.link.up()
        log.info("connected to Discord as %s", self.user)

    async def on_resumed(self) -> None:
        self.link.up()
        log.info("Discord connection resumed")

    async def on_disconnect(self) -> None:
        if not self.is_closed():
            self.link.down("disconnected from Discord's gateway; reconnecting")

    async def close(self) -> None:
        """Close the Discord connection and unload the cogs; the services stay open for their owner."""
        log.info("closing the Discord bot")
        logging.getLogger("discord.http").removeFilter(self._rate_limit_counter)
        await super().close()


class _GatewayRetryLine(logging.Filter):
    """discord.py logs each gateway reconnect with a full traceback; make it the one line an operator reads."""

    def __init__(self, link: DiscordLink) -> None:
        super().__init__()
        self.link = link

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Attempting a reconnect in %.2fs" and record.args:
            retry = float(record.args[0])  # type: ignore[index]
            exc = record.exc_info[1] if record.exc_info else None
            reason = f"cannot reach Discord: {describe_outage(exc) if exc else 'connection lost'}"
            self.link.down(f"{reason}; retrying in {retry:.0f} s")
            record.msg, record.args = "%s; retrying in %.0f s", (reason, retry)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


class _CappedBackoff(ReconnectBackoff):
    """What discord.py's gateway loop uses between reconnects (its own waits up to 17 min); see run_bot.

    Like discord.py's, it starts again from a short wait once the last failure is long past (the
    connection held in between), since one loop object serves the whole life of the connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._last_failure = 0.0

    def delay(self) -> float:
        now = time.monotonic()
        if self.failures and now - self._last_failure > 2 * self.cap_s + 60:
            self.reset()
        self._last_failure = now
        return super().delay()


# discord.Client.connect builds its backoff from this module-level name and nothing else uses it in
# client.py; swapping it caps the gateway's waits like our login retries. Pinned discord.py: checked
# by tests/test_discord_bot.py.
discord.client.ExponentialBackoff = _CappedBackoff  # type: ignore[misc,assignment]

_TRANSIENT = (OSError, asyncio.TimeoutError, aiohttp.ClientError, discord.GatewayNotFound)


def _is_transient(exc: BaseException) -> bool:
    """An outage (network, DNS, Discord's 5xx or a 429 it did not wait out) rather than a refusal."""
    if isinstance(exc, discord.DiscordServerError):
        return True
    if isinstance(exc, discord.HTTPException):
        return exc.status == 429
    return isinstance(exc, _TRANSIENT)


async def run_bot(
    services: Services,
    *,
    stop: asyncio.Event | None = None,
    link: DiscordLink | None = None,
    backoff: ReconnectBackoff | None = None,
) -> None:
    """Run the bot until SIGINT/SIGTERM or `stop`, riding out Discord outages; a refused token is fatal.

    Logging in (and syncing the commands) is retried with capped backoff and jitter while Discord
    cannot be reached, one log line per attempt; once connected, discord.py reconnects the gateway
    itself, on the same capped backoff. The bot is closed on the way out; `services` are not.
    """
    token = services.settings.discord_token
    if token is None or not token.get_secret_value().strip():
        raise MissingSecret(
            "DISCORD_TOKEN is not set; put the bot token from the Discord Developer Portal "
            "(Applications > your bot > Bot > Reset Token) in the environment or .env"
        )
    if stop is None:
        stop = asyncio.Event()
    link = link or DiscordLink()
    backoff = backoff or ReconnectBackoff()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not main thread
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    retry_line = _GatewayRetryLine(link)
    logging.getLogger("discord.client").addFilter(retry_line)
    try:
        while not stop.is_set():
            if await _run_bot_once(services, token.get_secret_value(), stop, link, backoff):
                return
            delay = backoff.delay()
            link.down(f"{link.reason}; retrying in {delay:.0f} s")
            log.warning("%s", link.reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    finally:
        logging.getLogger("discord.client").removeFilter(retry_line)
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _run_bot_once(
    services: Services, token: str, stop: asyncio.Event, link: DiscordLink, backoff: ReconnectBackoff
) -> bool:
    """One bot from login to close: True when we are done, False when Discord could not be reached."""
    bot = AtomizerBot(services, link=link)
    async with bot:
        link.down("connecting to Discord")
        try:
            await _until_stopped(bot.login(token), stop, bot)
        except discord.LoginFailure:
            raise InvalidInput(
                "Discord refused DISCORD_TOKEN (login failed); copy the token again from the "
                "Developer Portal (Applications > your bot > Bot > Reset Token)"
            ) from None
        except Exception as exc:
            if not _is_transient(exc):
                raise
            link.down(f"cannot reach Discord: {describe_outage(exc)}")
            return False
        if stop.is_set():
            return True
        backoff.reset()  # logged in: a later outage starts again from a short wait
        try:
            await _until_stopped(bot.connect(reconnect=True), stop, bot)
        except discord.PrivilegedIntentsRequired:
            raise InvalidInput(
                "Discord refused the Message Content intent; enable it in the Developer Portal "
                "(Applications > your bot > Bot > Privileged Gateway Intents)"
            ) from None
        except discord.ConnectionClosed as exc:
            if exc.code == 4004:
                raise InvalidInput(
                    "Discord refused DISCORD_TOKEN on the gateway (4004 authentication failed); copy the token "
                    "again from the Developer Portal"
                ) from None
            link.down(f"Discord closed the gateway connection ({exc.code}: {describe_outage(exc)})")
            return stop.is_set()
        return True


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event, bot: AtomizerBot) -> None:
    """Await `work` unless `stop` is set first; then close the bot and let `work` wind down."""
    runner = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            log.info("shutdown requested")
            await bot.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(runner, timeout=5)
            return
        runner.result()
    finally:
        stopper.cancel()
        if not runner.done():
            runner.cancel()
