"""/delegate and /delegations: the Discord front of bot.delegation. Thin: the service decides and records."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.authz import AccessLevel
from bot.boards import clip
from bot.chain_view import draw_tree
from bot.clock import utcnow
from bot.delegation import STATUSES, Delegation, DelegationService
from bot.discord_bot import NO_MENTIONS, log_unexpected, redact_all, requester_for, require_level
from bot.errors import InvalidInput
from bot.routing.service import AUTO, NobodyEligible
from bot.routing.table import table_lines
from cogs.routing import TABLE_WIDTH, capability_choices, route_message
from cogs.utils.directory import DiscordGuildDirectory
from cogs.utils.paginator import FIELD_VALUE_LIMIT, send_listing
from cogs.utils.views import AtomizerView

if TYPE_CHECKING:
    from bot.discord_bot import AtomizerBot

log = logging.getLogger(__name__)

MAX_INSTRUCTION = 6000  # Discord's cap on a string option; only the Discord client enforces it
MAX_TARGET = 200  # bot.targets.MAX_TARGET_LENGTH; longer is refused there with a clear message
BRIEF_MAX_BYTES = 200 * 1024  # under the gateway's 256 KiB body cap, with room for the JSON around it
BRIEF_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/yaml", "application/x-yaml"})
BRIEF_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst", ".json", ".yaml", ".yml", ".toml", ".csv", ".log"})
BRIEF_PLACEHOLDER = "(the attached brief)"  # stands in for the brief's text in the pre-defer checks
FOLLOW_BUDGET_S = 14 * 60.0  # how long a queued delegation is followed: inside the 15 min interaction token
RETRY_VIEW_TIMEOUT_S = 10 * 60.0  # the Retry button lives while the followup it sits on can still be edited
LISTING_LIMIT = 100  # the service's cap on one listing
PAGE_SIZE = 5
EXCERPT = 300  # characters of an instruction shown back

OUTCOME_COLOURS = {
    "accepted": discord.Colour.green(),
    "queued": discord.Colour.orange(),
    "sending": discord.Colour.orange(),
    "unconfirmed": discord.Colour.gold(),
    "failed": discord.Colour.red(),
    "expired": discord.Colour.dark_grey(),
}


# --- presentation -----------------------------------------------------------------------------


def safe(text: str, limit: int, client: discord.Client | None = None) -> str:
    """User or gateway text made inert for an embed: cut, redacted, markdown and mentions escaped."""
    text = clip(text, limit)
    if client is not None:
        text = redact_all(text, client)
    escaped = discord.utils.escape_markdown(discord.utils.escape_mentions(text))
    return clip(escaped, FIELD_VALUE_LIMIT)


def one_line(text: str) -> str:
    return " ".join(text.split())


def when(iso_text: str | None, style: discord.utils.TimestampStyle = "T") -> str:
    """A stored timestamp as a Discord timestamp (shown in each reader's own time zone)."""
    if not iso_text:
        return "—"
    return discord.utils.format_dt(datetime.fromisoformat(iso_text), style)


def target_label(delegation: Delegation) -> str:
    if not delegation.deliver:
        return "not delivered (the answer stays in the agent's session)"
    if not delegation.target:
        return "—"
    kind, _, id = delegation.target.partition(":")
    mention = f"<#{id}>" if kind == "channel" else f"<@{id}>"  # rendered as a name; embeds never ping
    return f"{mention} (`{delegation.target}`)"


def headline(delegation: Delegation, client: discord.Client) -> str:
    """One sentence saying what happened and what happens next."""
    agent = delegation.agent
    reason = safe(delegation.last_error or "no reason recorded", 500, client)
    match delegation.status:
        case "accepted":
            return f"accepted by {agent}"
        case "queued" | "sending":
            until = f"{when(delegation.expires_at)} ({when(delegation.expires_at, 'R')})"
            return f"queued: {agent} is unavailable ({reason}), will retry until {until}"
        case "unconfirmed":
            return f"unconfirmed: {reason}\nRetry only if {agent} did not start it: a retry may run it a second time."
        case status:
            return f"{status}: {reason}"


def outcome_embed(delegation: Delegation, client: discord.Client) -> discord.Embed:
    embed = discord.Embed(
        title=f"{delegation.display_id} → {delegation.agent}",
        description=headline(delegation, client),
        colour=OUTCOME_COLOURS.get(delegation.status, discord.Colour.default()),
    )
    latency = f"{delegation.latency_ms / 1000:.2f} s" if delegation.latency_ms is not None else "—"
    embed.add_field(name="Agent", value=delegation.agent)
    embed.add_field(name="Outcome", value=delegation.status)
    embed.add_field(name="Delegation", value=delegation.display_id)
    embed.add_field(name="runId", value=f"`{delegation.run_id}`" if delegation.run_id else "—")
    embed.add_field(name="Latency", value=latency)
    embed.add_field(name="Target", value=target_label(delegation))
    if delegation.task:
        embed.add_field(name="Task", value=safe(delegation.task, 100))
    embed.add_field(name="Instruction", value=safe(delegation.message, EXCERPT), inline=False)
    return embed


def followup_line(delegation: Delegation, waited_s: float) -> str:
    """What a followed delegation came to, in the words of scenario 09:20."""
    agent = delegation.agent
    match delegation.status:
        case "accepted":
            return f"delivered to {agent} (runId {delegation.run_id})"
        case "queued" | "sending":
            waited = f"{waited_s / 60:.0f} min"
            return f"still {delegation.status} after {waited}; follow it with /delegations show {delegation.display_id}"
        case status:
            return f"{status}: {delegation.display_id} to {agent} was not delivered (details below)"


def chain_block(tree: list[Delegation], client: discord.Client) -> str:
    """The chain drawn as `delegations show` draws it, in a code block that fits an embed field."""
    text = redact_all("\n".join(draw_tree(tree, utcnow())), client).replace("`", "ˋ")
    return f"```\n{clip(text, FIELD_VALUE_LIMIT - 8)}\n```"


def listing_field(delegation: Delegation, client: discord.Client) -> tuple[str, str]:
    """One delegation as an embed field of /delegations."""
    name = f"{delegation.display_id} · {delegation.agent} · {delegation.status}"
    by = safe(delegation.requester, 80) + (f" (via {safe(delegation.via, 80)})" if delegation.via else "")
    lines = [
        safe(one_line(delegation.message), 150),
        f"by {by} · {when(delegation.created_at, 'R')} · {target_label(delegation)}",
    ]
    if delegation.run_id:
        lines.append(f"runId `{delegation.run_id}`")
    if delegation.task:
        lines.append(f"task {safe(delegation.task, 60)}")
    if delegation.last_error and delegation.status != "accepted":
        lines.append(f"⚠ {safe(one_line(delegation.last_error), 200, client)}")
    return name, "\n".join(lines)


# --- the brief attachment ---------------------------------------------------------------------


def check_brief(brief: discord.Attachment) -> None:
    """Refuse what is surely not a text brief before deferring (no download)."""
    content_type = (brief.content_type or "").split(";")[0].strip().lower()
    texty = content_type.startswith("text/") or content_type in BRIEF_TEXT_TYPES
    if content_type and not texty:
        raise InvalidInput(
            f"the brief {brief.filename!r} is {content_type}, not text; attach a UTF-8 text file "
            "(.txt, .md, .json, .yaml …) holding the instruction"
        )
    if not content_type and PurePosixPath(brief.filename).suffix.lower() not in BRIEF_SUFFIXES:
        raise InvalidInput(
            f"the brief {brief.filename!r} does not look like a text file; attach .txt or .md (UTF-8 text)"
        )
    if brief.size > BRIEF_MAX_BYTES:
        raise InvalidInput(
            f"the brief {brief.filename!r} is {brief.size:,} bytes; a brief may have at most {BRIEF_MAX_BYTES:,}"
        )


async def read_brief(brief: discord.Attachment) -> str:
    """The brief's text: downloaded, size-checked again (the declared size is the sender's word), UTF-8."""
    try:
        data = await brief.read()
    except discord.HTTPException as exc:
        raise InvalidInput(
            f"could not download the brief {brief.filename!r} from Discord (HTTP {exc.status}); attach it again"
        ) from None
    if len(data) > BRIEF_MAX_BYTES:
        raise InvalidInput(f"the brief {brief.filename!r} is {len(data):,} bytes; at most {BRIEF_MAX_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"the brief {brief.filename!r} is not UTF-8 text; save it as UTF-8 and attach it again"
        ) from None
    if "\x00" in text:
        raise InvalidInput(f"the brief {brief.filename!r} holds binary data; attach a text file")
    if not text.strip():
        raise InvalidInput(f"the brief {brief.filename!r} is empty")
    return text


# --- buttons ----------------------------------------------------------------------------------


class RetryView(AtomizerView):
    """Retry for an unconfirmed delegation: the service decides who may (operators) and whether it still can."""

    def __init__(self, cog: Delegations, delegation: Delegation) -> None:
        super().__init__(timeout=RETRY_VIEW_TIMEOUT_S)
        self.cog = cog
        self.delegation_id = delegation.id
        self.message: discord.WebhookMessage | None = None
        self.retry.label = f"Retry {delegation.display_id}"

    @discord.ui.button(label="Retry", style=discord.ButtonStyle.primary)
    async def retry(self, interaction: discord.Interaction, button: discord.ui.Button[RetryView]) -> None:
        # A deferred update shows nothing, so a refusal that follows can still be private.
        await interaction.response.defer()
        requester = requester_for(interaction, self.cog.bot.services.config)
        delegation = await self.cog.service.retry(requester, self.delegation_id)
        self.stop()
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(view=None)  # the button is spent
        await self.cog.send_outcome(interaction, delegation, content=f"retried by {safe(requester.name, 80)}")

    async def on_timeout(self) -> None:
        if self.message is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.message.edit(view=None)


# --- the cog ----------------------------------------------------------------------------------


class Delegations(commands.Cog):
    """Translates /delegate and /delegations to DelegationService calls, and their results to embeds."""

    def __init__(self, bot: AtomizerBot) -> None:
        self.bot = bot
        self.followups: set[asyncio.Task[None]] = set()  # background waits on queued delegations
        self.views: weakref.WeakSet[discord.ui.View] = weakref.WeakSet()  # live buttons, stopped on unload

    @property
    def service(self) -> DelegationService:
        return self.bot.services.delegation

    async def cog_unload(self) -> None:
        for task in self.followups:
            task.cancel()
        await asyncio.gather(*self.followups, return_exceptions=True)
        for view in list(self.views):
            view.stop()

    async def directory(self, interaction: discord.Interaction, target: str | None) -> DiscordGuildDirectory | None:
        """The guild for resolving `target`, having asked Discord about the person it may name (the bot
        caches no members without the members intent): the caller and a person named are then known."""
        if interaction.guild is None:
            return None  # the service falls back on what the config knows
        directory = DiscordGuildDirectory(interaction.guild, fallback=self.service.directory)
        directory.remember([interaction.user])
        if target is not None and self.bot.services.config.channels.get(target.strip()) is None:
            await directory.look_up(target)  # not found: the service says so, naming close matches
        return directory

    # --- /delegate ----------------------------------------------------------------------------

    @app_commands.command(name="delegate", description="Send an instruction to an agent (operators; agents by config)")
    @app_commands.describe(
        agent="The agent that should do it",
        instruction="What the agent should do (up to 6,000 characters; attach a brief for more)",
        target="Where the answer goes: #channel, @member, channel:<id>, user:<id> or a channel role (default: here)",
        deliver="Post the agent's answer in Discord (default: yes)",
        task="The task this belongs to, e.g. T-12",
        brief="A UTF-8 text file whose text is the instruction (after `instruction`, if both are given)",
        needs="Capabilities the work needs, e.g. meshing; with agent auto, the agent is chosen by them",
    )
    # The floor to reach the service, not the authority to delegate: the service judges that, for people
    # (operator and up) and agents (delegates_to) alike, audits refusals and names who could. Viewer keeps
    # /delegate out of a roleless newcomer's /help; bot accounts cannot invoke slash commands anyway.
    @require_level(AccessLevel.VIEWER)
    async def delegate(
        self,
        interaction: discord.Interaction,
        agent: str,
        instruction: app_commands.Range[str, 1, MAX_INSTRUCTION] | None = None,
        target: app_commands.Range[str, 1, MAX_TARGET] | None = None,
        deliver: bool = True,
        task: str | None = None,
        brief: discord.Attachment | None = None,
        needs: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        if instruction is not None and len(instruction) > MAX_INSTRUCTION:
            raise InvalidInput(
                f"the instruction is {len(instruction):,} characters; a slash option takes at most "
                f"{MAX_INSTRUCTION:,}. Attach the text as a file in `brief` instead"
            )
        if brief is None and not (instruction or "").strip():
            raise InvalidInput("give an instruction, or attach a brief (a text file) holding it")
        if brief is not None:
            check_brief(brief)
        options: dict[str, Any] = {
            "target": target,
            "deliver": deliver,
            "task": task,
            "origin": f"channel:{interaction.channel_id}",  # by default the answer comes back here
            "directory": await self.directory(interaction, target),
        }
        # Bad input and refusals must be answered privately, which is possible only before deferring
        # (a deferred answer's first followup inherits its visibility). None of this touches the network.
        checks = {k: v for k, v in options.items() if k != "task"}
        # agent:auto is routed here (audited; nobody eligible is a private refusal with the table); it probes only
        # agents the monitor has not seen lately.
        self.service.validate_request(instruction or BRIEF_PLACEHOLDER, **checks)
        try:
            agent, route = await self.bot.services.routing.resolve(requester, agent, needs)
        except NobodyEligible as nobody:  # the table in a code block, so its columns line up
            lines = table_lines(nobody.decision, TABLE_WIDTH)
            message = route_message(lines[0], lines[1:])
            await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        await self.service.preflight(requester, agent, instruction or BRIEF_PLACEHOLDER, **checks)  # audits refusals
        await interaction.response.defer(thinking=True)
        message = instruction or ""
        if brief is not None:
            message = "\n\n".join(part for part in (message.strip(), await read_brief(brief)) if part)
        result = await self.service.delegate(requester, agent, message, needs=route.needs if route else (), **options)
        if result.delegation is None:  # only a dry run has none
            raise RuntimeError("the delegation service returned no delegation")
        said = None
        if route is not None:
            head = f"route: {route.explanation}"
            if route.chosen != result.delegation.agent:
                head += f"\n{route.chosen} did not admit it; routed again to {result.delegation.agent}"
            # Queued: not the clean choice, so who was considered and why not, in one message that fits.
            table = table_lines(route, TABLE_WIDTH)[1:]
            said = route_message(head, table) if route.queued else safe(head, 600, self.bot)
        await self.send_outcome(interaction, result.delegation, content=said)

    async def send_outcome(
        self,
        interaction: discord.Interaction,
        delegation: Delegation,
        *,
        content: str | None = None,
        follow: bool = True,
    ) -> None:
        """The outcome in the conversation; a queued one is followed, an unconfirmed one gets Retry."""
        view = RetryView(self, delegation) if delegation.status == "unconfirmed" else None
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        message = await interaction.followup.send(
            content, embed=outcome_embed(delegation, self.bot), allowed_mentions=NO_MENTIONS, wait=True, **extra
        )
        if view is not None:
            view.message = message
            self.views.add(view)
        if follow and not delegation.is_final:
            self.follow(interaction, delegation)

    def follow(self, interaction: discord.Interaction, delegation: Delegation) -> None:
        """Wait in the background for a queued delegation to end, then say so in the same conversation."""
        task = asyncio.create_task(
            self._follow(interaction, delegation.id), name=f"delegation-follow-{delegation.display_id}"
        )
        self.followups.add(task)
        task.add_done_callback(self.followups.discard)

    async def _follow(self, interaction: discord.Interaction, delegation_id: int) -> None:
        # Measured from now, not from `interaction.expires_at`: the command started within seconds of
        # the interaction, and a local clock cannot disagree with Discord's about that.
        try:
            final = await self.service.wait_final(delegation_id, FOLLOW_BUDGET_S)
            await self.send_outcome(interaction, final, content=followup_line(final, FOLLOW_BUDGET_S), follow=False)
        except asyncio.CancelledError:
            raise
        except discord.HTTPException:
            log.warning("could not report D-%s in its conversation (token expired?)", delegation_id, exc_info=True)
        except Exception as exc:  # nobody awaits this task: log it, or it is lost
            log_unexpected(f"following D-{delegation_id} failed", exc, self.bot)

    # --- /delegations -------------------------------------------------------------------------

    delegations = require_level(AccessLevel.VIEWER)(
        app_commands.Group(name="delegations", description="Recent delegations; one with its chain; cancel a chain")
    )

    @delegations.command(name="list", description="Recent delegations, newest first")
    @app_commands.describe(agent="Only to this agent", status="Only in this state", mine="Only the ones you asked for")
    @app_commands.choices(status=[app_commands.Choice(name=status, value=status) for status in STATUSES])
    @require_level(AccessLevel.VIEWER)
    async def list_(
        self,
        interaction: discord.Interaction,
        agent: str | None = None,
        status: str | None = None,
        mine: bool = False,
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        rows = await self.service.recent(
            agent=agent, status=status, requester_user_id=requester.user_id if mine else None, limit=LISTING_LIMIT
        )
        filters = [f"agent {agent}" if agent else "", f"status {status}" if status else "", "yours" if mine else ""]
        description = "Filtered: " + ", ".join(f for f in filters if f) if any(filters) else None
        if not rows:
            description = (description + "\n" if description else "") + "No delegations match."
        elif len(rows) == LISTING_LIMIT:
            description = (description + "\n" if description else "") + f"The newest {LISTING_LIMIT} are shown."
        await send_listing(
            interaction,
            "Delegations",
            [listing_field(delegation, self.bot) for delegation in rows],
            description=description,
            per_page=PAGE_SIZE,
            views=self.views,
        )

    @delegations.command(name="show", description="A delegation and its chain, each one's state")
    @app_commands.describe(id="The delegation, e.g. D-12")
    @require_level(AccessLevel.VIEWER)
    async def show(self, interaction: discord.Interaction, id: app_commands.Range[str, 1, 24]) -> None:
        delegation = await self.service.get(id)
        tree = await self.service.tree(delegation.id)
        embed = outcome_embed(delegation, self.bot)
        embed.add_field(name="Chain", value=chain_block(tree, self.bot), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @delegations.command(
        name="cancel", description="Stop a delegation and what hangs under it not yet sent (operators)"
    )
    @app_commands.describe(id="The delegation, e.g. D-12 (a chain's root stops the whole chain)")
    @require_level(AccessLevel.OPERATOR)
    async def cancel(self, interaction: discord.Interaction, id: app_commands.Range[str, 1, 24]) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        done = await self.service.cancel(requester, id)
        await interaction.response.send_message(
            f"{safe(done.summary(), 1800)} (by {interaction.user.mention})", allowed_mentions=NO_MENTIONS
        )

    # --- autocomplete -------------------------------------------------------------------------

    @delegate.autocomplete("agent")
    async def delegate_agent_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """`auto` (chosen by needs), then the agents."""
        auto = (
            [app_commands.Choice(name="auto — chosen by needs", value=AUTO)]
            if AUTO.startswith(current.strip().lower())
            else []
        )
        return [*auto, *await self.agent_choices(interaction, current)][:25]

    @delegate.autocomplete("needs")
    async def needs_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return capability_choices(self.bot.services.routing.declared(), current)

    @list_.autocomplete("agent")
    async def agent_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Configured agents whose name starts with what was typed, with their model."""
        typed = current.strip().lower()
        return [
            app_commands.Choice(name=clip(f"{agent.name} — {agent.model}" if agent.model else agent.name, 100),
                                value=agent.name)
            for agent in self.bot.services.config.agents
            if agent.name.startswith(typed)
        ][:25]  # fmt: skip


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Delegations(bot))
