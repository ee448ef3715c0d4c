"""/heartbeat and /standup, the standup's delivery to Discord, and agents' posts in #daily-standup.

Thin: bot.heartbeat decides who may run, pause and resume, and records every run; bot.standup composes
the standup and audits its posts. This cog translates, gives the standup service its Discord poster,
and tells the heartbeat service when an agent's own account speaks in the standup channel (a sign that
its own heartbeat is alive).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.api import pause_seconds
from bot.authz import AccessLevel
from bot.boards import BoardContent, BoardField, clip, paginate
from bot.clock import parse_iso
from bot.discord_bot import NO_MENTIONS, enforce_level, requester_for, requester_for_user, require_level
from bot.errors import InvalidInput
from bot.heartbeat import FOREVER, HeartbeatRun, HeartbeatService, JobStatus
from bot.standup import MAX_EMBEDS, StandupService, standup_for
from cogs.utils.boards import to_embed

if TYPE_CHECKING:
    from bot.discord_bot import AtomizerBot

log = logging.getLogger(__name__)

DURATION_MAX = 50  # characters of a typed duration (the Discord client alone enforces Range)
# The levels a heartbeat is verified at, in order; a run's `level` is the last one it reached.
LEVELS = (("live", "live"), ("ready", "ready"), ("accepted", "hook accepted"), ("completed", "run completed"))
STATUS_ICON = {"ok": "✅", "skipped": "⏭️", "running": "⏳"}  # anything else is a failure: ❌


# --- presentation -----------------------------------------------------------------------------


def when(moment: str) -> str:
    """A stored time as Discord shows it to each reader: in their zone, and relative."""
    at = parse_iso(moment)
    return f"{discord.utils.format_dt(at, 'f')} ({discord.utils.format_dt(at, 'R')})"


def ladder(run: HeartbeatRun) -> str:
    """live ✅ → ready ✅ → hook accepted ✅ → run completed ❌: how far the run got, and where it stopped."""
    names = [name for name, _ in LEVELS]
    reached = names.index(run.level) + 1 if run.level in names else 0
    steps = []
    for index, (_, label) in enumerate(LEVELS):
        if index < reached:
            mark = "✅"
        elif index == reached and run.failed:
            mark = "❌"
        else:
            mark = "▫️"
        steps.append(f"{label} {mark}")
    return " → ".join(steps)


def run_line(run: HeartbeatRun, *, at: bool = True) -> str:
    icon = STATUS_ICON.get(run.status, "❌")
    slot = f", {discord.utils.format_dt(parse_iso(run.slot), 'R')}" if at else ""
    detail = f" — {discord.utils.escape_markdown(clip(run.detail, 300))}" if run.detail else ""
    return f"{icon} **{run.status}** ({run.trigger}{slot}){detail}"


def run_text(run: HeartbeatRun, by: str) -> str:
    """The answer to /heartbeat run: the result, the levels it was verified at, and the run id."""
    head = f"💓 **{run.agent}** heartbeat, run by {discord.utils.escape_markdown(by)}: {run_line(run, at=False)}"
    lines = [head, ladder(run)]
    if run.run_id:
        lines.append(f"runId `{run.run_id}`")
    return "\n".join(lines)


def paused_text(job: JobStatus) -> str | None:
    if not job.paused_until:
        return None
    return "⏸️ paused until resumed" if job.paused_until == FOREVER else f"⏸️ paused until {when(job.paused_until)}"


def job_field(job: JobStatus) -> BoardField:
    """One heartbeat of /heartbeat list: schedule and policy, next slot, last result, pause."""
    paused = paused_text(job)
    failing = job.last is not None and job.last.failed
    icon = "⏸️" if paused else ("❌" if failing else "💓")
    lines = [
        f"{job.schedule} · method {job.method} · missed slots: {job.missed.replace('_', ' ')}",
        f"next: {when(job.next_slot)}" if job.next_slot else "next: none within a week",
        f"last: {run_line(job.last)}" if job.last else "last: none yet",
    ]
    if job.last is not None and job.last.status not in ("skipped", "running"):
        lines.append(ladder(job.last))
    if job.failures:
        lines.append(f"{job.failures} failed in a row")
    if paused:
        lines.append(paused)
    return BoardField(f"{icon} {job.agent}", "\n".join(lines))


def heartbeat_list(jobs: list[JobStatus], watched: list[str], config_file: str) -> list[BoardContent]:
    if jobs:
        description = f"{len(jobs)} heartbeat{'s' if len(jobs) != 1 else ''} sent by atomizer-hq"
    else:
        description = (
            f"atomizer-hq sends no heartbeats: add [heartbeat.<agent>] with `every` or `cron` to {config_file}"
        )
    if watched:
        description += f"\nWatched (they send their own): {', '.join(watched)}"
    return paginate("Heartbeats", [job_field(job) for job in jobs], description=description, colour=0xE91E63)


# --- the cog ----------------------------------------------------------------------------------


class Heartbeat(commands.Cog):
    """Translates /heartbeat and /standup to the core; posts the standup; notes agents' posts in #daily-standup."""

    heartbeat = require_level(AccessLevel.VIEWER)(
        app_commands.Group(name="heartbeat", description="Heartbeats atomizer-hq sends: list, run, pause, resume")
    )

    def __init__(self, bot: AtomizerBot) -> None:
        self.bot = bot
        config = bot.services.config
        self.standup_channel_id = config.channels.get(config.heartbeats.standup_channel)

    @property
    def heartbeats(self) -> HeartbeatService:
        return self.bot.services.heartbeats

    @property
    def standup(self) -> StandupService:
        return standup_for(self.bot.services)

    async def cog_load(self) -> None:
        # The daily post (the runner's timer) and /standup post:true both deliver through this.
        self.standup.post = self.post_standup

    async def cog_unload(self) -> None:
        if self.standup.post == self.post_standup:
            self.standup.post = None

    # --- the standup in Discord -----------------------------------------------------------------

    async def post_standup(self, parts: list[BoardContent]) -> str:
        """One message in the standup channel, up to 10 embeds; pings nobody. Its id."""
        role = self.bot.services.config.heartbeats.standup_channel
        if self.standup_channel_id is None:
            raise InvalidInput(
                f"[channels] has no {role!r} channel for the standup; add it to {self.bot.services.config.source} "
                "(or set heartbeats.standup_channel to a channel role that is there)"
            )
        channel = self.bot.get_channel(int(self.standup_channel_id))
        if not isinstance(channel, discord.abc.Messageable):
            raise InvalidInput(
                f"the standup channel {self.standup_channel_id} ({role}) is not a text channel this bot can see; "
                f"check [channels] in {self.bot.services.config.source} and the bot's permissions there "
                "(Send Messages, Embed Links)"
            )
        message = await channel.send(
            embeds=[to_embed(part) for part in parts[:MAX_EMBEDS]], allowed_mentions=NO_MENTIONS
        )
        return str(message.id)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """An agent's own account speaking in #daily-standup: its own heartbeat is alive."""
        if self.standup_channel_id is None or str(message.channel.id) != self.standup_channel_id:
            return
        if self.bot.user is not None and message.author.id == self.bot.user.id:
            return
        requester = requester_for_user(message.author, self.bot.services.config)
        if requester.is_agent:
            await self.heartbeats.seen(requester.name)

    # --- /standup -------------------------------------------------------------------------------

    @app_commands.command(name="standup", description="The daily standup now: only you see it, unless you post it")
    @app_commands.describe(post="Post it in the standup channel for everyone (operators)")
    @require_level(AccessLevel.VIEWER)
    async def standup_command(self, interaction: discord.Interaction, post: bool = False) -> None:
        if not post:
            await interaction.response.defer(ephemeral=True, thinking=True)
            parts = await self.standup.compose()
            await interaction.followup.send(
                embeds=[to_embed(part) for part in parts[:MAX_EMBEDS]], ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return
        enforce_level(interaction, AccessLevel.OPERATOR)  # refused before anything is composed
        requester = requester_for(interaction, self.bot.services.config)
        await interaction.response.defer(ephemeral=True, thinking=True)
        message_id = await self.standup.post_now(requester)
        link = f"https://discord.com/channels/{interaction.guild_id}/{self.standup_channel_id}/{message_id}"
        await interaction.followup.send(
            f"Posted the standup in <#{self.standup_channel_id}>: {link}", ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    # --- /heartbeat -----------------------------------------------------------------------------

    def job_agent(self, agent: str) -> str:
        """The agent's name if atomizer-hq sends its heartbeat; checked before deferring, so refusals stay private."""
        name = self.bot.services.config.require_agent(agent).name
        if name not in self.heartbeats.jobs():
            raise InvalidInput(
                f"atomizer-hq sends no heartbeat for {name}; add [heartbeat.{name}] with `every` or `cron` "
                f"to {self.bot.services.config.source}"
            )
        return name

    @heartbeat.command(name="list", description="Each heartbeat: schedule, policy, next run, last result, pause")
    async def list_heartbeats(self, interaction: discord.Interaction) -> None:
        jobs = await self.heartbeats.status()
        watched = [name for name in self.heartbeats.watched() if name not in self.heartbeats.jobs()]
        parts = heartbeat_list(jobs, watched, self.bot.services.config.source)
        await interaction.response.send_message(
            embeds=[to_embed(part) for part in parts[:MAX_EMBEDS]], ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @heartbeat.command(name="run", description="Send an agent's heartbeat now and verify it (operators)")
    @app_commands.describe(agent="An agent atomizer-hq sends heartbeats for")
    @require_level(AccessLevel.OPERATOR)
    async def run(self, interaction: discord.Interaction, agent: str) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        name = self.job_agent(agent)
        await interaction.response.defer(thinking=True)  # a run waits for the agent to complete it
        result = await self.heartbeats.run_now(requester, name)
        await interaction.followup.send(run_text(result, requester.name), allowed_mentions=NO_MENTIONS)

    @heartbeat.command(name="pause", description="No heartbeats for an agent, for a while or until resumed (admins)")
    @app_commands.describe(
        agent="An agent atomizer-hq sends heartbeats for", duration="e.g. 30m, 2h, 1d; empty: until resumed"
    )
    @require_level(AccessLevel.ADMIN)
    async def pause(
        self,
        interaction: discord.Interaction,
        agent: str,
        duration: app_commands.Range[str, 1, DURATION_MAX] | None = None,
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        name = self.job_agent(agent)
        seconds = pause_seconds(clip(duration, DURATION_MAX) if duration else None)
        pause = await self.heartbeats.pause(requester, name, seconds)
        if pause.already:  # nothing changed: only the caller needs to hear it
            await interaction.response.send_message(
                f"{pause.already}; nothing changed.", ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return
        until = pause.until
        how_long = "until resumed" if until == FOREVER else f"until {when(until)}"
        # In the channel: whoever wonders why an agent's heartbeats stopped should find out who and until when.
        await interaction.response.send_message(
            f"⏸️ Heartbeats for **{name}** paused {how_long} by {discord.utils.escape_markdown(requester.name)}. "
            f"`/heartbeat resume {name}` resumes them.",
            allowed_mentions=NO_MENTIONS,
        )

    @heartbeat.command(name="resume", description="Resume an agent's paused heartbeats (admins)")
    @app_commands.describe(agent="An agent atomizer-hq sends heartbeats for")
    @require_level(AccessLevel.ADMIN)
    async def resume(self, interaction: discord.Interaction, agent: str) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        name = self.job_agent(agent)
        already = await self.heartbeats.resume(requester, name)
        if already:
            await interaction.response.send_message(
                f"{already}; nothing changed.", ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return
        job = next((job for job in await self.heartbeats.status() if job.agent == name), None)
        upcoming = f"; next {when(job.next_slot)}" if job is not None and job.next_slot else ""
        await interaction.response.send_message(
            f"▶️ Heartbeats for **{name}** resumed by {discord.utils.escape_markdown(requester.name)}{upcoming}.",
            allowed_mentions=NO_MENTIONS,
        )

    @run.autocomplete("agent")
    @pause.autocomplete("agent")
    @resume.autocomplete("agent")
    async def job_agents(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Only agents atomizer-hq sends heartbeats for."""
        typed = current.strip().lower()
        return [app_commands.Choice(name=name, value=name) for name in self.heartbeats.jobs() if typed in name][:25]


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Heartbeat(bot))
