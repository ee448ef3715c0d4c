"""A View whose failures look like every command's: the tree's one error handler answers them."""

from __future__ import annotations

from typing import Any

import discord


class AtomizerView(discord.ui.View):
    """Base for the bot's buttons.

    discord.py sends a button callback's exceptions to `View.on_error`, which only logs by default, so
    a refused click would look like a dead button. Forwarding to `AtomizerTree.on_error` keeps one
    place deciding how failures look (ephemeral, redacted, logged when unexpected).
    """

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any], /) -> None:
        await interaction.client.tree.on_error(interaction, error)  # type: ignore[attr-defined,arg-type]


class AtomizerModal(discord.ui.Modal):
    """Base for the bot's modals: like AtomizerView, a refused submit is answered by the tree's handler.

    discord.py's `Modal.on_error` only logs, so without this the user would see "Something went wrong".
    """

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await interaction.client.tree.on_error(interaction, error)  # type: ignore[attr-defined,arg-type]
