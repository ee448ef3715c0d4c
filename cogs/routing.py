"""/route: which agent `/delegate agent:auto` would choose now, and the table it would choose from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.authz import AccessLevel
from bot.boards import clip
from bot.discord_bot import NO_MENTIONS, requester_for, require_level
from bot.routing.table import table_lines

if TYPE_CHECKING:
    from bot.discord_bot import AtomizerBot

MESSAGE_LIMIT = 2000  # Discord's cap on a message's content
TABLE_WIDTH = 110  # a code block wider than this wraps on a desktop client


def route_message(explanation: str, table: list[str]) -> str:
    """The explanation, then the table in a code block (cut to fit one message, saying so)."""
    head = discord.utils.escape_mentions(discord.utils.escape_markdown(explanation))
    body = "\n".join(table).replace("```", "'''")
    text = f"{clip(head, 600)}\n```\n{body}\n```"
    if len(text) <= MESSAGE_LIMIT:
        return text
    room = MESSAGE_LIMIT - len(head[:600]) - 60
    return f"{clip(head, 600)}\n```\n{body[:room]}\n```(cut: `atomizer-hq route` shows every agent)"


def capability_choices(declared: list[str], current: str) -> list[app_commands.Choice[str]]:
    """The capabilities agents declare, completing the last of a comma-separated list (/route, /delegate)."""
    done, _, typed = current.rpartition(",")
    prefix = f"{done}, " if done.strip() else ""
    return [
        app_commands.Choice(name=clip(prefix + word, 100), value=clip(prefix + word, 100))
        for word in declared
        if word.startswith(typed.strip().lower())
    ][:25]


class Routing(commands.Cog):
    def __init__(self, bot: AtomizerBot) -> None:
        self.bot = bot

    @app_commands.command(name="route", description="Who /delegate agent:auto would pick now, and why")
    @app_commands.describe(needs="Capabilities the work needs, e.g. meshing or meshing, fea")
    @require_level(AccessLevel.VIEWER)
    async def route(self, interaction: discord.Interaction, needs: app_commands.Range[str, 1, 200]) -> None:
        routing = self.bot.services.routing
        requester = requester_for(interaction, self.bot.services.config)
        wanted = routing.needs(needs)  # a typo is answered privately, before deferring
        await interaction.response.defer(thinking=True)
        decision = await routing.preview(requester, wanted)
        lines = table_lines(decision, TABLE_WIDTH)
        await interaction.followup.send(route_message(lines[0], lines[1:]), allowed_mentions=NO_MENTIONS)

    @route.autocomplete("needs")
    async def needs_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return capability_choices(self.bot.services.routing.declared(), current)


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Routing(bot))
