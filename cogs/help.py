"""/help: the slash commands the caller may use, grouped by the access level each one needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.authz import AccessLevel, Requester
from bot.discord_bot import (
    NO_MENTIONS,
    command_level,
    requester_for,
    require_level,
    role_mentions,
    walk_leaf_commands,
)

if TYPE_CHECKING:
    from bot.discord_bot import AtomizerBot

FIELD_LIMIT = 1024  # Discord's cap on an embed field's value
TITLES = {
    AccessLevel.NONE: "Everyone",
    AccessLevel.VIEWER: "Viewer",
    AccessLevel.OPERATOR: "Operator",
    AccessLevel.ADMIN: "Admin",
}


def help_lines(commands_: list[app_commands.Command], level: AccessLevel) -> dict[AccessLevel, list[str]]:
    """One line per command the level may use, grouped by the level the command needs."""
    grouped: dict[AccessLevel, list[str]] = {}
    for command in sorted(commands_, key=lambda c: (command_level(c), c.qualified_name)):
        needed = command_level(command)
        if needed <= level:
            grouped.setdefault(needed, []).append(f"`/{command.qualified_name}` — {command.description}")
    return grouped


def _chunks(lines: list[str]) -> list[str]:
    """Lines packed into field values under Discord's 1,024-character cap."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = line[: FIELD_LIMIT - 1] + "…" if len(line) > FIELD_LIMIT else line
        if current and len(current) + 1 + len(line) > FIELD_LIMIT:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def help_embed(requester: Requester, grouped: dict[AccessLevel, list[str]]) -> discord.Embed:
    embed = discord.Embed(
        title="atomizer-hq commands",
        description=f"What you can do here, as {requester.describe()}.",
        colour=discord.Colour.blurple(),
    )
    for level in sorted(grouped):
        for index, value in enumerate(_chunks(grouped[level])):
            name = TITLES[level] if index == 0 else f"{TITLES[level]} (continued)"
            embed.add_field(name=name, value=value, inline=False)
    return embed


class Help(commands.Cog):
    """Thin adapter: reads levels from the command tree, holds no business logic."""

    def __init__(self, bot: AtomizerBot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="List the atomizer-hq commands you can use")
    @require_level(AccessLevel.NONE)
    async def help(self, interaction: discord.Interaction) -> None:
        config = self.bot.services.config
        requester = requester_for(interaction, config)
        grouped = help_lines(list(walk_leaf_commands(self.bot.tree, interaction.guild)), requester.level)
        content = None
        if requester.level is AccessLevel.NONE and not requester.is_agent:
            roles = role_mentions(AccessLevel.VIEWER, config) or "a role configured under [roles]"
            content = (
                "You don't have an atomizer-hq role yet. To get started, ask an admin for the "
                f"viewer role ({roles}); operator and admin roles unlock more."
            )
        await interaction.response.send_message(
            content,
            embed=help_embed(requester, grouped),
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Help(bot))
