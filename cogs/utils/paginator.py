"""Pages of embed fields within Discord's limits, and a Previous/Next view to turn them."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import discord

from bot.boards import clip
from bot.discord_bot import NO_MENTIONS, send_ephemeral
from cogs.utils.views import AtomizerView

# Discord's embed limits (discord.md); neither discord.py nor dpytest checks them.
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_COUNT_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
EMBED_TOTAL_LIMIT = 6000
FOOTER_RESERVE = 40  # room for the "Page 12/34" footer the paginator adds


def pack_fields(
    title: str,
    fields: Sequence[tuple[str, str]],
    *,
    description: str | None = None,
    per_page: int = 10,
    colour: discord.Colour | None = None,
) -> list[discord.Embed]:
    """Fields (name, value) packed into embeds of at most `per_page` fields, each embed within every limit.

    Always returns at least one embed, so an empty listing still has a page saying so.
    """
    per_page = max(1, min(per_page, FIELD_COUNT_LIMIT))
    title = clip(title, TITLE_LIMIT)
    description = clip(description, DESCRIPTION_LIMIT) if description else None

    def new_page() -> discord.Embed:
        return discord.Embed(title=title, description=description, colour=colour)

    pages = [new_page()]
    budget = EMBED_TOTAL_LIMIT - FOOTER_RESERVE
    for raw_name, raw_value in fields:
        name = clip(raw_name or "\u200b", FIELD_NAME_LIMIT)
        value = clip(raw_value or "\u200b", FIELD_VALUE_LIMIT)
        page = pages[-1]
        if len(page.fields) >= per_page or len(page) + len(name) + len(value) > budget:
            page = new_page()
            pages.append(page)
        page.add_field(name=name, value=value, inline=False)
    return pages


class EmbedPaginator(AtomizerView):
    """Previous/Next over prepared embeds; only the person who asked may turn the pages.

    The paginator owns the footers ("Page 2/5"). One page is sent without buttons.
    """

    def __init__(self, pages: Sequence[discord.Embed], *, owner_id: int, timeout: float = 600.0) -> None:
        super().__init__(timeout=timeout)
        if not pages:
            raise ValueError("a paginator needs at least one page")
        self.pages = list(pages)
        self.owner_id = owner_id
        self.index = 0
        self._interaction: discord.Interaction | None = None
        for number, page in enumerate(self.pages, start=1):
            page.set_footer(text=f"Page {number}/{len(self.pages)}")
        self._sync_buttons()

    @property
    def page(self) -> discord.Embed:
        return self.pages[self.index]

    async def start(self, interaction: discord.Interaction, *, ephemeral: bool = True) -> None:
        """Answer `interaction` with the first page (and the buttons when there is more than one)."""
        self._interaction = interaction
        kwargs = {"view": self} if len(self.pages) > 1 else {}
        if interaction.response.is_done():
            await interaction.followup.send(
                embed=self.page, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS, wait=True, **kwargs
            )
        else:
            await interaction.response.send_message(
                embed=self.page, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS, **kwargs
            )
        if len(self.pages) == 1:
            self.stop()

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await send_ephemeral(interaction, "These pages belong to whoever ran the command; run it yourself.")
        return False

    async def on_timeout(self) -> None:
        # Inert buttons would answer "This interaction failed"; take them away while the token lasts.
        if self._interaction is not None:
            with contextlib.suppress(discord.HTTPException):
                await self._interaction.edit_original_response(view=None)

    def _sync_buttons(self) -> None:
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index >= len(self.pages) - 1

    async def _show(self, interaction: discord.Interaction, index: int) -> None:
        self.index = max(0, min(index, len(self.pages) - 1))
        self._sync_buttons()
        await interaction.response.edit_message(embed=self.page, view=self, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button[EmbedPaginator]) -> None:
        await self._show(interaction, self.index - 1)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button[EmbedPaginator]) -> None:
        await self._show(interaction, self.index + 1)


async def send_listing(
    interaction: discord.Interaction,
    title: str,
    fields: Sequence[tuple[str, str]],
    *,
    description: str | None,
    per_page: int,
    views: set[discord.ui.View],
) -> None:
    """A private, paginated listing; its view is kept in `views` so the cog can stop it on unload."""
    pages = pack_fields(title, fields, description=description, per_page=per_page, colour=discord.Colour.blurple())
    paginator = EmbedPaginator(pages, owner_id=interaction.user.id)
    await paginator.start(interaction, ephemeral=True)
    if not paginator.is_finished():
        views.add(paginator)
