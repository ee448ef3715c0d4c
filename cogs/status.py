"""/status, the live status board in #it-ops, and alerts: a thin layer over bot.monitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.authz import AccessLevel
from bot.boards import LiveBoard
from bot.cluster import FleetStatus
from bot.discord_bot import NO_MENTIONS, AtomizerBot, require_level
from bot.status_view import AgentOverview, agent_detail, collect_overview, status_board, status_embed
from cogs.utils.boards import DiscordBoardPublisher, to_embed

log = logging.getLogger(__name__)
STATUS_BOARD = "status"


class Status(commands.Cog):
    """Probes on a timer, keeps the board current, posts alerts; answers /status."""

    def __init__(self, bot: AtomizerBot) -> None:
        self.bot = bot
        self.services = bot.services
        self.publisher = DiscordBoardPublisher(bot, bot.services.config.source)
        self._task: asyncio.Task[None] | None = None
        self._round = asyncio.Lock()

    async def cog_load(self) -> None:
        # The probing itself is the core's (the runner's timer), so it goes on while Discord is down;
        # this cog only shows each round in Discord.
        if self.bot.background_tasks:
            self.services.monitor.add_round_listener(self.publish_round)

    async def cog_unload(self) -> None:
        self.services.monitor.remove_round_listener(self.publish_round)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Connected (at start or after an outage): draw the board and post what waited, without a timer."""
        if self.bot.background_tasks and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._first_round(), name="status-first-round")

    async def _first_round(self) -> None:
        try:
            await self.monitor_round()
        except Exception:
            log.exception("status monitor: the round after connecting failed; the next timed round redraws")

    async def publish_round(self, fleet: FleetStatus) -> None:
        """A timed round of the core: board and alerts, while connected (else they wait for the next)."""
        if not self.bot.link.is_up:
            return
        async with self._round:
            await self._publish(fleet)

    # --- the background monitor ---------------------------------------------------------------

    def _channel_id(self, role: str) -> str | None:
        return self.services.config.channels.get(role)

    @property
    def board(self) -> LiveBoard | None:
        channel_id = self._channel_id(self.services.config.monitor.board_channel)
        if channel_id is None:
            return None
        return LiveBoard(STATUS_BOARD, channel_id, self.services.store, self.publisher)

    async def monitor_round(self) -> FleetStatus:
        """One probe round: history and alerts recorded, the board edited if it changed, alerts posted."""
        async with self._round:
            fleet, _ = await self.services.monitor.probe_round()
            await self._publish(fleet)
            return fleet

    async def _publish(self, fleet: FleetStatus) -> None:
        try:
            await self.refresh_board(fleet)
        except discord.HTTPException as exc:
            # Redrawn next round; the alerts are what someone must act on, so they never wait for the board.
            log.warning("status board: Discord refused the update (HTTP %s); redrawing next round", exc.status)
        await self.post_alerts()

    async def refresh_board(self, fleet: FleetStatus) -> None:
        board = self.board
        if board is not None:
            await board.show(status_board(fleet, await collect_overview(self.services, fleet)))

    async def post_alerts(self) -> None:
        """Post what the monitor raised; a Discord failure leaves the rest for the next round."""
        channel_id = self._channel_id(self.services.config.monitor.alerts_channel)
        channel = self.bot.get_channel(int(channel_id)) if channel_id else None
        if not isinstance(channel, discord.abc.Messageable):
            return
        for alert in await self.services.monitor.unposted_alerts():
            icon = {
                "down": "🔴", "recovered": "🟢", "flapping": "🟠", "reminder": "🔴",
                "heartbeat_failing": "💔", "heartbeat_recovered": "💚", "heartbeat_missing": "🔕",
            }.get(alert.kind, "")  # fmt: skip
            try:
                await channel.send(f"{icon} {discord.utils.escape_markdown(alert.text)}", allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as exc:
                await self.services.monitor.mark_failed(alert.id, f"{exc.status} {exc.text}")
                log.warning("could not post alert %d (%s); will retry next round", alert.id, exc.status)
                return
            await self.services.monitor.mark_posted(alert.id)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        board = self.board
        if board is not None and await board.message_deleted(str(payload.message_id)):
            log.info("the status board was deleted; posting it again")
            async with self._round:
                fleet = await self.services.cluster.probe_all()
                await self.refresh_board(fleet)

    # --- /status ------------------------------------------------------------------------------

    async def _agent_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        typed = current.strip().lower()
        return [
            app_commands.Choice(name=f"{a.name} (:{a.port})", value=a.name)
            for a in self.services.config.agents
            if typed in a.name
        ][:25]

    @app_commands.command(name="status", description="The fleet at a glance, or one agent in detail")
    @app_commands.describe(agent="one agent, with its recent transitions")
    @app_commands.autocomplete(agent=_agent_names)
    @require_level(AccessLevel.VIEWER)
    async def status(self, interaction: discord.Interaction, agent: str | None = None) -> None:
        await interaction.response.defer(thinking=True)
        if agent is None:
            fleet = await self.monitor_round()
            parts = status_embed(fleet, await collect_overview(self.services, fleet))
        else:
            name = self.services.config.require_agent(agent).name
            probed = await self.services.cluster.probe(name)
            fleet = FleetStatus([probed], probed.readiness.latency_s)
            [item] = await collect_overview(self.services, fleet)
            monitor = self.services.monitor
            parts = agent_detail(
                AgentOverview(item.status, item.since, item.uptime_24h, item.last_delegation, item.silenced_until),
                await monitor.uptime(name, 7 * 86_400),
                await monitor.transitions(name, 10),
                await monitor.health(name),
            )
        await interaction.followup.send(embeds=[to_embed(p) for p in parts[:10]], allowed_mentions=NO_MENTIONS)


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Status(bot))
