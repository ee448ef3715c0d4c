"""/cluster: start, stop, restart, logs and alert silences for the agents' units. Thin: bot.cluster_control decides.

Stop and restart interrupt an agent for everyone, so they ask first: a Confirm/Cancel prompt that only the
admin who asked can answer, and that expires (nothing happens) if nobody does.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.authz import AccessLevel
from bot.boards import clip
from bot.clock import human_duration, parse_duration, utcnow
from bot.cluster_control import ClusterControl, Silence
from bot.discord_bot import NO_MENTIONS, redact, redact_all, requester_for, require_level, send_ephemeral
from bot.errors import SystemdUnavailable
from bot.systemd import DEFAULT_LOG_LINES, MAX_LOG_LINES, Action, UnitActionResult, check_lines
from cogs.utils.views import AtomizerView

if TYPE_CHECKING:
    from bot.discord_bot import AtomizerBot

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 60.0
# The prompt is edited through the command's interaction token, which Discord honours for 15 minutes.
MAX_CONFIRM_TIMEOUT_S = 14 * 60.0
INLINE_LOG_LIMIT = 1900  # a code block of this much still fits Discord's 2,000-character message
MAX_DURATION_TEXT = 50
PAST = {"start": "started", "stop": "stopped", "restart": "restarted"}
PRESENT = {"start": "Starting", "stop": "Stopping", "restart": "Restarting"}

Outcome = Literal["confirmed", "cancelled", "expired"]


# --- presentation -----------------------------------------------------------------------------


def target_label(agent: str, agents: Sequence[str]) -> str:
    return f"all {len(agents)} agents" if agent.strip().lower() == "all" else agents[0]


def results_text(action: Action, label: str, by: str, results: Sequence[UnitActionResult]) -> str:
    """Each unit's new state on its own line; systemd's absence said once, with what to do about it."""
    failed = [result for result in results if not result.ok]
    outcome = "done" if not failed else f"{len(failed)} of {len(results)} failed"
    head = f"**{action} {label}**: {outcome} (asked by {discord.utils.escape_markdown(by)})"
    lines = [f"{'✅' if r.ok else '❌'} {discord.utils.escape_markdown(r.summary)}" for r in results]
    unavailable = dict.fromkeys(r.error.message for r in failed if isinstance(r.error, SystemdUnavailable))
    return "\n".join([head, *lines, *(f"⚠️ {message}" for message in unavailable)])


def log_reply(text: str, agent: str, unit: str, lines: int) -> tuple[str, discord.File | None]:
    """Short logs inline as a code block; longer ones as a .txt attachment (the text is already redacted)."""
    body = text.rstrip("\n") or "(the journal has no entries for this unit)"
    inline = "```\n" + body.replace("```", "`\u200b``") + "\n```"  # a log line cannot close the block early
    heading = f"**{agent}**: last {lines} journal lines of `{unit}`"
    if len(heading) + 1 + len(inline) <= INLINE_LOG_LIMIT:
        return f"{heading}\n{inline}", None
    data = (text if text.endswith("\n") else text + "\n").encode()
    file = discord.File(io.BytesIO(data), filename=f"{agent}-journal-{lines}.txt", description=f"journal of {unit}")
    return f"{heading} ({len(data):,} bytes, attached)", file


def silence_text(silence: Silence, by: str) -> str:
    who = discord.utils.escape_markdown(by)
    if silence.lifted:
        return f"🔔 Alerts for **{silence.agent}** are back on (silence lifted by {who})."
    until = f"{discord.utils.format_dt(silence.until, 'f')} ({discord.utils.format_dt(silence.until, 'R')})"
    return (
        f"🔕 Alerts for **{silence.agent}** are silenced until {until}, for {human_duration(silence.duration_s)}, "
        f"by {who}. `/cluster silence {silence.agent} 0` lifts it."
    )


# --- the confirmation -------------------------------------------------------------------------


class ConfirmView(AtomizerView):
    """Confirm/Cancel for one stop or restart; only the admin who asked may answer, and it expires."""

    def __init__(
        self,
        cog: Cluster,
        origin: discord.Interaction,
        action: Action,
        agent: str,
        agents: Sequence[str],
        *,
        timeout: float,
    ) -> None:
        super().__init__(timeout=timeout)
        self.cog = cog
        self.origin = origin  # the slash command: its token edits the prompt when it expires
        self.owner_id = origin.user.id
        self.owner_name = origin.user.display_name
        self.action: Action = action
        self.agent = agent
        self.agents = list(agents)
        self.label = target_label(agent, agents)
        self.outcome: Outcome | None = None
        self.settled = asyncio.Event()  # set once the prompt shows the outcome, whatever it is
        self.confirm.label = f"{action.capitalize()} {self.label}"

    def prompt(self) -> str:
        expires = discord.utils.format_dt(utcnow() + timedelta(seconds=self.timeout or 0), "R")
        listed = "" if len(self.agents) == 1 else f" ({', '.join(self.agents)})"
        return (
            f"**{self.action.capitalize()} {self.label}{listed}?** This interrupts whatever "
            f"{'it is' if len(self.agents) == 1 else 'they are'} doing. "
            f"Only {discord.utils.escape_markdown(self.owner_name)} can confirm; this expires {expires}."
        )

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await send_ephemeral(
            interaction,
            f"Only {discord.utils.escape_markdown(self.owner_name)}, who ran /cluster {self.action}, "
            "can confirm or cancel this; run the command yourself if you need it.",
        )
        return False

    def _settle(self) -> None:
        """The prompt now shows its outcome: no longer pending."""
        self.cog.pending.discard(self)
        self.settled.set()

    def _claim(self, outcome: Outcome) -> bool:
        """The first answer wins; a second click racing the first does nothing."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self.stop()
        return True

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        if not self._claim("confirmed"):
            return
        requester = requester_for(interaction, self.cog.bot.services.config)
        try:
            # Answer the click at once (the units may take a while), and take the buttons away.
            await interaction.response.edit_message(
                content=f"⏳ {PRESENT[self.action]} {self.label}… (confirmed by "
                f"{discord.utils.escape_markdown(requester.name)})",
                view=None,
                allowed_mentions=NO_MENTIONS,
            )
            try:
                results = await self.cog.control.act(requester, self.action, self.agent)
            except Exception:
                with contextlib.suppress(discord.HTTPException):
                    await interaction.edit_original_response(
                        content=f"❌ {self.action} {self.label} did not run.", allowed_mentions=NO_MENTIONS
                    )
                raise  # AtomizerView sends it to the tree's handler, which explains privately
            text = redact(results_text(self.action, self.label, requester.name, results), self.cog.bot)
            await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        finally:
            self._settle()

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        if not self._claim("cancelled"):
            return
        try:
            await interaction.response.edit_message(
                content=f"Cancelled: {self.label} was not {PAST[self.action]}.", view=None, allowed_mentions=NO_MENTIONS
            )
        finally:
            self._settle()

    async def on_timeout(self) -> None:
        if self.outcome is not None:
            return
        self.outcome = "expired"
        try:
            with contextlib.suppress(discord.HTTPException):
                await self.origin.edit_original_response(
                    content=f"⌛ The confirmation expired after {human_duration(self.timeout or 0)}: "
                    f"{self.label} was not {PAST[self.action]}. Run /cluster {self.action} again if still needed.",
                    view=None,
                    allowed_mentions=NO_MENTIONS,
                )
        finally:
            self._settle()


# --- the cog ----------------------------------------------------------------------------------


class Cluster(commands.Cog):
    """Translates /cluster to ClusterControl calls, and unit results to messages."""

    cluster = require_level(AccessLevel.ADMIN)(
        app_commands.Group(name="cluster", description="Start, stop, restart the agents; their logs; alert silences")
    )

    def __init__(self, bot: AtomizerBot, *, confirm_timeout: float = CONFIRM_TIMEOUT_S) -> None:
        self.bot = bot
        self.confirm_timeout = confirm_timeout
        self.pending: set[ConfirmView] = set()  # prompts awaiting an answer; each leaves when settled

    @property
    def control(self) -> ClusterControl:
        services = self.bot.services
        return ClusterControl(services.config, services.store, services.systemd, services.monitor)

    async def cog_unload(self) -> None:
        # An unanswered prompt dies with the cog: nothing was done, and its buttons answer nothing now.
        for view in list(self.pending):
            view.stop()
        self.pending.clear()

    # --- start / stop / restart -----------------------------------------------------------------

    @cluster.command(name="start", description="Start an agent's gateway unit (or all)")
    @app_commands.describe(agent="The agent, or 'all'")
    async def start(self, interaction: discord.Interaction, agent: str) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        agents = self.control.plan(requester, "start", agent)  # refusals and typos answered privately, before deferring
        await interaction.response.defer(thinking=True)
        results = await self.control.act(requester, "start", agent)
        text = results_text("start", target_label(agent, agents), requester.name, results)
        await interaction.followup.send(redact(text, self.bot), allowed_mentions=NO_MENTIONS)

    @cluster.command(name="stop", description="Stop an agent's gateway unit (or all), after you confirm")
    @app_commands.describe(agent="The agent, or 'all'")
    async def stop(self, interaction: discord.Interaction, agent: str) -> None:
        await self.ask_to_confirm(interaction, "stop", agent)

    @cluster.command(name="restart", description="Restart an agent's gateway unit (or all), after you confirm")
    @app_commands.describe(agent="The agent, or 'all'")
    async def restart(self, interaction: discord.Interaction, agent: str) -> None:
        await self.ask_to_confirm(interaction, "restart", agent)

    async def ask_to_confirm(self, interaction: discord.Interaction, action: Action, agent: str) -> None:
        """Post the Confirm/Cancel prompt; nothing touches a unit until the owner confirms."""
        requester = requester_for(interaction, self.bot.services.config)
        agents = self.control.plan(requester, action, agent)
        timeout = min(max(self.confirm_timeout, 0.001), MAX_CONFIRM_TIMEOUT_S)
        view = ConfirmView(self, interaction, action, agent, agents, timeout=timeout)
        self.pending.add(view)  # before sending: a very short timeout could otherwise settle it first
        try:
            await interaction.response.send_message(view.prompt(), view=view, allowed_mentions=NO_MENTIONS)
        except BaseException:
            view.stop()
            self.pending.discard(view)
            raise

    # --- logs -----------------------------------------------------------------------------------

    @cluster.command(name="logs", description="An agent's last journal lines (only you see them)")
    @app_commands.describe(agent="The agent", lines=f"How many lines (1–{MAX_LOG_LINES}, default {DEFAULT_LOG_LINES})")
    async def logs(
        self,
        interaction: discord.Interaction,
        agent: str,
        lines: app_commands.Range[int, 1, MAX_LOG_LINES] = DEFAULT_LOG_LINES,
    ) -> None:
        services = self.bot.services
        requester = requester_for(interaction, services.config)
        self.control.check(requester, "logs")
        name = services.config.require_agent(agent).name
        check_lines(lines)  # Range is enforced by the Discord client only
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = redact_all(await self.control.logs(requester, name, lines), self.bot)
        content, file = log_reply(text, name, services.systemd.unit(name), lines)
        extra = {"file": file} if file is not None else {}
        await interaction.followup.send(content, ephemeral=True, allowed_mentions=NO_MENTIONS, **extra)

    # --- silence --------------------------------------------------------------------------------

    @cluster.command(name="silence", description="No alerts for an agent for a while (maintenance); 0 lifts it")
    @app_commands.describe(agent="The agent", duration="How long: e.g. 30m, 2h, 1h30m, 1d (at most 7 days); 0 lifts it")
    async def silence(
        self, interaction: discord.Interaction, agent: str, duration: app_commands.Range[str, 1, MAX_DURATION_TEXT]
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        seconds = parse_duration(clip(duration, MAX_DURATION_TEXT))
        silenced = await self.control.silence(requester, agent, seconds)
        # In the channel, not privately: whoever watches #it-ops should know why an agent went quiet.
        await interaction.response.send_message(silence_text(silenced, requester.name), allowed_mentions=NO_MENTIONS)

    # --- autocomplete ---------------------------------------------------------------------------

    def _choices(self, current: str, *, with_all: bool) -> list[app_commands.Choice[str]]:
        typed = current.strip().lower()
        names = [*self.bot.services.config.agent_names, *(["all"] if with_all else [])]
        return [app_commands.Choice(name=name, value=name) for name in names if typed in name][:25]

    @start.autocomplete("agent")
    @stop.autocomplete("agent")
    @restart.autocomplete("agent")
    async def agent_or_all(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Configured agents containing what was typed, and "all"."""
        return self._choices(current, with_all=True)

    @logs.autocomplete("agent")
    @silence.autocomplete("agent")
    async def one_agent(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return self._choices(current, with_all=False)


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Cluster(bot))
