"""/task, the live board in #task-board, and agents' posts there: the Discord front of bot.taskboard.

Thin: the core decides who may do what, validates and records. This cog only translates: slash commands
and their buttons for people; posts in #task-board, read with bot.task_grammar, for agents (and for
operators who use the same grammar); and the live board, redrawn whenever any front end (Discord, the
loopback API, the CLI in process, a delegation) changes a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.authz import AccessLevel, Requester
from bot.boards import TOTAL_MAX, BoardContent, CoalescedBoard, LiveBoard, Monotonic, Sleep, clip
from bot.clock import utcnow
from bot.discord_bot import (
    GENERIC_FAILURE,
    MESSAGE_LIMIT,
    NO_MENTIONS,
    enforce_level,
    log_unexpected,
    redact,
    requester_for,
    requester_for_user,
    require_level,
)
from bot.errors import AtomizerError, InvalidInput
from bot.targets import GuildDirectory
from bot.task_grammar import BoardCommand, MessageOutcome, apply_board_message, parse_board_post
from bot.task_view import BOARD_TASKS_MAX, PRIORITY_MARK, STATUS_ICON, task_board, task_detail, task_line
from bot.taskboard import (
    DESCRIPTION_MAX,
    NOTE_MAX,
    PRIORITIES,
    STATUSES,
    TITLE_MAX,
    Task,
    TaskBoard,
    TaskDetail,
    TaskEvent,
    assignee_or_nobody,
)
from cogs.utils.boards import DiscordBoardPublisher, to_embed
from cogs.utils.directory import DiscordGuildDirectory, member_label, person_id
from cogs.utils.paginator import send_listing
from cogs.utils.views import AtomizerModal, AtomizerView

if TYPE_CHECKING:
    from bot.discord_bot import AtomizerBot

log = logging.getLogger(__name__)

TASK_BOARD = "tasks"  # the LiveBoard's name in board_messages
ACK = "✅"
# A /task show message is ephemeral: only its interaction tokens can edit it, and they last 15 minutes.
VIEW_TIMEOUT_S = 14 * 60.0
OTHER_PROCESSES_EVERY_S = 5.0  # how often the board looks for changes made outside this process
LIST_LIMIT = 500  # the core's cap on one listing
PAGE_SIZE = 10
ID_MAX, ASSIGNEE_MAX, DUE_MAX = 20, 200, 40  # slash option lengths (only the Discord client enforces them)
MODAL_TITLE_MAX = 45
EMBEDS_MAX = 10
_BARE_PREFIX = re.compile(r"t\s*-?", re.IGNORECASE)  # "T" or "T-" typed so far: every task matches

STATUS_CHOICES = [app_commands.Choice(name=status.replace("_", " "), value=status) for status in STATUSES]
LIST_STATUS_CHOICES = [
    app_commands.Choice(name="open (default)", value="open"),
    app_commands.Choice(name="all", value="all"),
    *STATUS_CHOICES,
]
PRIORITY_CHOICES = [app_commands.Choice(name=priority, value=priority) for priority in PRIORITIES]


# --- presentation -----------------------------------------------------------------------------


def plain(text: str, limit: int) -> str:
    """User text on one line, cut, with markdown made inert (mentions never ping: allowed mentions are off)."""
    return discord.utils.escape_markdown(clip(" ".join(text.split()), limit))


def change_text(task: Task, what: str, requester: Requester) -> str:
    """What a write did, for everyone in the channel: the task's id, the change, who, and its new state."""
    return (
        f"**{task.display_id}** {what} by {plain(requester.name, 80)}\n{plain(task_line(task, utcnow().date()), 600)}"
    )


def listing_field(task: Task) -> tuple[str, str]:
    """One task as an embed field of /task list."""
    today = utcnow().date()
    name = f"{STATUS_ICON.get(task.status, '')} {task.display_id} {PRIORITY_MARK[task.priority]}{task.title}"
    parts = [task.status.replace("_", " "), task.assignee_text]
    if task.priority != "normal":
        parts.append(task.priority)
    if task.due:
        parts.append(f"due {task.due}" + (" **overdue**" if task.is_overdue(today) else ""))
    lines = [" · ".join(parts)]
    if task.status == "blocked" and task.blocked_reason:
        lines.append(f"blocked: {task.blocked_reason}")
    return name, "\n".join(lines)


def fit_embeds(parts: list[BoardContent]) -> list[discord.Embed]:
    """As many parts as one message may carry: 10 embeds and 6,000 characters across them."""
    embeds: list[discord.Embed] = []
    used = 0
    for part in parts[:EMBEDS_MAX]:
        if embeds and used + part.size() > TOTAL_MAX:
            break
        embeds.append(to_embed(part))
        used += part.size()
    return embeds


def detail_embeds(detail: TaskDetail) -> list[discord.Embed]:
    return fit_embeds(task_detail(detail, utcnow().date()))


# --- /task show's buttons ---------------------------------------------------------------------


class TaskView(AtomizerView):
    """Start / Done / Block under /task show. Each click carries the version the message showed, so a
    click on a task someone changed meanwhile is refused (TaskConflict, answered privately), never applied."""

    def __init__(self, cog: Tasks, task: Task, interaction: discord.Interaction) -> None:
        super().__init__(timeout=VIEW_TIMEOUT_S)
        self.cog = cog
        self.interaction = interaction  # the latest answered interaction: its token can edit the message
        self.refresh(task)

    def refresh(self, task: Task) -> None:
        self.task_id, self.version = task.id, task.version
        self.start.disabled = task.status == "in_progress"
        self.done.disabled = task.status == "done"
        self.block.disabled = task.status == "blocked"

    async def apply(self, interaction: discord.Interaction, change: Callable[[Requester], Awaitable[Task]]) -> None:
        """Run a change as the clicker, then show the task as it is now (with the new version)."""
        task = await change(self.cog.requester(interaction))
        self.refresh(task)
        self.interaction = interaction
        detail = await self.cog.tasks.show(task.id)
        note = f"{plain(task.already, 600)}; nothing changed." if task.already else None
        await interaction.response.edit_message(
            content=note, embeds=detail_embeds(detail), view=self, allowed_mentions=NO_MENTIONS
        )

    @discord.ui.button(label="Start", style=discord.ButtonStyle.primary)
    async def start(self, interaction: discord.Interaction, button: discord.ui.Button[TaskView]) -> None:
        enforce_level(interaction, AccessLevel.OPERATOR)  # the floor of the write commands, before anything
        version = self.version
        await self.apply(
            interaction, lambda who: self.cog.tasks.move(who, self.task_id, "in_progress", expected_version=version)
        )

    @discord.ui.button(label="Done", style=discord.ButtonStyle.success)
    async def done(self, interaction: discord.Interaction, button: discord.ui.Button[TaskView]) -> None:
        enforce_level(interaction, AccessLevel.OPERATOR)
        version = self.version
        await self.apply(interaction, lambda who: self.cog.tasks.done(who, self.task_id, expected_version=version))

    @discord.ui.button(label="Block", style=discord.ButtonStyle.danger)
    async def block(self, interaction: discord.Interaction, button: discord.ui.Button[TaskView]) -> None:
        # Refused before the form opens: nobody should type a reason only to be told they may not.
        enforce_level(interaction, AccessLevel.OPERATOR)
        await interaction.response.send_modal(BlockModal(self))

    async def on_timeout(self) -> None:
        # Dead buttons would answer "This interaction failed"; take them away while the token lasts.
        with contextlib.suppress(discord.HTTPException):
            await self.interaction.edit_original_response(view=None)


class BlockModal(AtomizerModal):
    """Asks why a task is blocked; applies with the version the message showed when Block was clicked."""

    reason: discord.ui.TextInput[BlockModal] = discord.ui.TextInput(
        label="Why is it blocked?",
        style=discord.TextStyle.paragraph,
        placeholder="waiting for the NX licence",
        max_length=NOTE_MAX,
    )

    def __init__(self, task_view: TaskView) -> None:
        super().__init__(title=clip(f"Block T-{task_view.task_id}", MODAL_TITLE_MAX), timeout=VIEW_TIMEOUT_S)
        self.task_view = task_view
        self.task_id = task_view.task_id
        self.version = task_view.version

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        reason = self.reason.value
        await self.task_view.apply(
            interaction,
            lambda who: self.task_view.cog.tasks.block(who, self.task_id, reason, expected_version=self.version),
        )


# --- the cog ----------------------------------------------------------------------------------


class Tasks(commands.Cog):
    """Translates /task and #task-board posts to TaskBoard calls; keeps the live board in #task-board."""

    task = require_level(AccessLevel.VIEWER)(
        app_commands.Group(name="task", description="The task board: add, move, assign, show and list tasks")
    )

    def __init__(
        self, bot: AtomizerBot, *, sleep: Sleep = asyncio.sleep, monotonic: Monotonic = time.monotonic
    ) -> None:
        """`sleep` and `monotonic` pace the board's redraws; tests pass a clock they move themselves."""
        self.bot = bot
        self._sleep = sleep
        config = bot.services.config
        self.channel_id = config.channels.get(config.taskboard.board_channel)
        self.publisher = DiscordBoardPublisher(bot, config.source)
        self.live: LiveBoard | None = None
        self.coalesced: CoalescedBoard | None = None
        if self.channel_id is not None:
            self.live = LiveBoard(TASK_BOARD, self.channel_id, bot.services.store, self.publisher)
            self.coalesced = CoalescedBoard(
                self.live,
                self.render,
                min_interval_s=config.taskboard.min_edit_interval_s,
                sleep=sleep,
                monotonic=monotonic,
            )
        self.views: weakref.WeakSet[discord.ui.View] = weakref.WeakSet()  # live buttons, stopped on unload
        self.startup: asyncio.Task[None] | None = None  # the first draw, once connected
        self.follower: asyncio.Task[None] | None = None  # then: changes made by other processes
        self._seen_change = 0  # TaskBoard.last_change() as of the last look
        directory: GuildDirectory = self.tasks.directory
        if isinstance(directory, DiscordGuildDirectory) and directory.fallback is not None:
            directory = directory.fallback
        self._fallback = directory  # what the core knew before a guild was seen (the config); restored on unload

    @property
    def tasks(self) -> TaskBoard:
        return self.bot.services.tasks

    async def cog_load(self) -> None:
        # Registered here, not per command: the API, the CLI in process and delegations change tasks too.
        self.tasks.add_listener(self._task_changed)
        if self.bot.background_tasks:
            self.startup = asyncio.create_task(self._draw_when_ready(), name="task-board-first-draw")

    async def cog_unload(self) -> None:
        self.tasks.remove_listener(self._task_changed)
        for task in (self.startup, self.follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.coalesced is not None:
            await self.coalesced.close()
        for view in list(self.views):
            view.stop()
        if isinstance(self.tasks.directory, DiscordGuildDirectory):
            self.tasks.directory = self._fallback

    # --- who is asking, and the guild the core resolves names in ---------------------------------

    def use_guild(self, guild: discord.Guild | None) -> DiscordGuildDirectory | None:
        """Let the core resolve @names and label people from this guild (its cache and the members Discord
        told us of); agents stay known from the config. The core has one directory for every front end, so
        the API in process gains it too."""
        if guild is None:
            return None
        current = self.tasks.directory
        if isinstance(current, DiscordGuildDirectory) and current.guild is guild:
            return current
        self.tasks.directory = directory = DiscordGuildDirectory(guild, fallback=self._fallback)
        return directory

    def requester(self, interaction: discord.Interaction) -> Requester:
        directory = self.use_guild(interaction.guild)
        if directory is not None:
            directory.remember([interaction.user])
        return requester_for(interaction, self.bot.services.config)

    async def check_assignee(self, guild: discord.Guild | None, text: str | None) -> None:
        """Ask Discord about the person an assignee names, so the core finds them (no member is cached
        without the members intent); refuse, saying what works, a person Discord does not know."""
        directory = self.use_guild(guild)
        if directory is None or text is None or assignee_or_nobody(text) is None:
            return
        value = text.strip()
        agents = [agent.name for agent in self.bot.services.config.agents]
        if value.lower().lstrip("@") in agents:
            return
        found = await directory.look_up(value)
        if found is None:
            return  # nothing to ask, or no answer in time: the core decides with what is known
        id = person_id(value)
        known = directory.is_member(str(id)) if id is not None else directory.member_ids_named(value.lstrip("@"))
        if known:
            return
        close = [f"@{member.name}" for member in found[:3]]
        close += [name for name in difflib.get_close_matches(value.lower().lstrip("@"), agents, n=2)]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        what = "is not a member of this server" if id is not None else "names no agent and no member of this server"
        raise InvalidInput(
            f"{value!r} {what}{hint}. An assignee is an agent ({', '.join(agents)}) or a member: pick one from "
            "the suggestions, or write their username (@name), a mention (<@id>) or user:<id>"
        )

    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        configured = self.bot.services.settings.guild_id
        if configured is None or str(guild.id) == str(configured):
            self.use_guild(guild)

    # --- the live board -----------------------------------------------------------------------

    async def render(self) -> list[BoardContent]:
        """The board as the database holds it now (the coalescer calls this at redraw time, not at request)."""
        tasks = self.tasks
        shown = await tasks.list(open_only=True, limit=BOARD_TASKS_MAX)
        return task_board(shown, await tasks.count(open_only=True), utcnow().date())

    def board_channel(self) -> discord.abc.Messageable | None:
        channel = self.bot.get_channel(int(self.channel_id)) if self.channel_id else None
        return channel if isinstance(channel, discord.abc.Messageable) else None

    def request_redraw(self) -> bool:
        """Ask for a redraw (coalesced); False when there is no board channel to draw in yet."""
        if self.coalesced is None or self.board_channel() is None:
            # Not connected yet (the draw at ready covers it), or the channel is not visible to the bot.
            return False
        self.coalesced.request()
        return True

    async def _task_changed(self, task: Task, event: TaskEvent) -> None:
        self.request_redraw()

    async def check_other_processes(self) -> bool:
        """Redraw if another process changed tasks (the CLI, a second atomizer-hq on the database): their
        changes reach no listener here. Returns whether anything changed since the last look."""
        latest = await self.tasks.last_change()
        if latest == self._seen_change:
            return False
        self._seen_change = latest
        self.request_redraw()  # an unchanged board costs a render and no Discord call
        return True

    async def _follow_other_processes(self) -> None:
        while True:
            await self._sleep(OTHER_PROCESSES_EVERY_S)
            try:
                await self.check_other_processes()
            except AtomizerError as exc:  # a locked database now and then: look again next time
                log.warning("task board: could not look for changes made elsewhere: %s", exc)
            except Exception:  # never stop following because of one bad look
                log.exception("task board: looking for changes made elsewhere failed; looking again later")

    async def _draw_when_ready(self) -> None:
        await self.bot.wait_until_ready()
        configured = self.bot.services.settings.guild_id
        self.use_guild(self.bot.get_guild(int(configured)) if configured else None)
        if self.coalesced is None:
            log.warning(
                "[channels] has no %r channel: no live task board", self.bot.services.config.taskboard.board_channel
            )
            return
        with contextlib.suppress(AtomizerError):  # unknown yet: the follower's first look redraws
            self._seen_change = await self.tasks.last_change()
        if not self.request_redraw():
            log.warning(
                "the task board channel %s is not visible to the bot; check [channels] in %s and the "
                "bot's permissions there (View Channel, Send Messages, Embed Links)",
                self.channel_id,
                self.bot.services.config.source,
            )
        self.follower = asyncio.create_task(self._follow_other_processes(), name="task-board-follower")

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if self.live is not None and await self.live.message_deleted(str(payload.message_id)):
            log.info("a task board message was deleted; posting it again")
            self.request_redraw()

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if self.live is None:
            return
        forgotten = [await self.live.message_deleted(str(message_id)) for message_id in payload.message_ids]
        if any(forgotten):
            self.request_redraw()

    # --- agents' (and operators') posts in #task-board ------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if self.channel_id is None or str(message.channel.id) != self.channel_id or message.guild is None:
            return
        if self.bot.user is not None and message.author.id == self.bot.user.id:
            return  # our own board, acknowledgements and hints
        if message.webhook_id is not None or message.type not in (
            discord.MessageType.default,
            discord.MessageType.reply,
        ):
            return
        requester = requester_for_user(message.author, self.bot.services.config)
        commands = [parsed for parsed in parse_board_post(message.content) if isinstance(parsed, BoardCommand)]
        if not requester.is_agent:
            # People talk here too: only an operator's post that reads as a board command is applied.
            # Other bots are never people, whatever roles they hold.
            if message.author.bot or requester.level < AccessLevel.OPERATOR or not commands:
                return
        directory = self.use_guild(message.guild)
        if directory is not None:
            directory.remember([message.author, *message.mentions])
            for assignee in dict.fromkeys(command.assignee for command in commands if command.assignee):
                await directory.look_up(assignee)  # the core then knows the person, or says who it knows
        requester = replace(requester, front_end="task-board")
        try:
            outcome = await apply_board_message(self.tasks, requester, message.content)
        except Exception as exc:  # an agent that tried is never silently ignored, even when we fail
            log_unexpected(f"#task-board post {message.id} by {requester.name} failed", exc, self.bot)
            await self.answer(message, GENERIC_FAILURE)
            return
        if outcome.applied:
            await self.acknowledge(message, outcome)
        elif outcome.reply:
            await self.answer(message, outcome.reply)

    async def acknowledge(self, message: discord.Message, outcome: MessageOutcome) -> None:
        """A ✅ reaction; words as well when it does not say it all (a new task's id, a line refused)."""
        try:
            await message.add_reaction(ACK)
        except discord.HTTPException:  # no Add Reactions permission, or the post is gone: say it in words
            await self.answer(message, f"{ACK} {outcome.reply}")
            return
        if not outcome.quiet and outcome.reply:
            await self.answer(message, outcome.reply)

    async def answer(self, message: discord.Message, text: str) -> None:
        """A one-line reply to a post; pings nobody (not even its author)."""
        line = clip(" ".join(redact(text, self.bot).split()), MESSAGE_LIMIT)
        try:
            await message.channel.send(
                line,
                reference=message.to_reference(fail_if_not_exists=False),
                mention_author=False,
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException:
            log.warning("could not answer #task-board post %s", message.id, exc_info=True)

    # --- writes (operators; the core applies its own rules too) ----------------------------------

    async def announce(self, interaction: discord.Interaction, task: Task, what: str, requester: Requester) -> None:
        if task.already:  # nothing changed: only the caller needs to hear it
            text = f"{plain(task.already, 600)}; nothing changed."
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        await interaction.response.send_message(change_text(task, what, requester), allowed_mentions=NO_MENTIONS)

    @task.command(name="add", description="Add a task (operators)")
    @app_commands.describe(
        title="What is to be done (one line)",
        assignee="An agent or a member: pick one, or write @username, a mention or user:<id>",
        priority="How urgent (default: normal)",
        due="YYYY-MM-DD, today, tomorrow, +3d or +2w",
        description="More detail (several lines allowed)",
    )
    @app_commands.choices(priority=PRIORITY_CHOICES)
    @require_level(AccessLevel.OPERATOR)
    async def add(
        self,
        interaction: discord.Interaction,
        title: app_commands.Range[str, 1, TITLE_MAX],
        assignee: app_commands.Range[str, 1, ASSIGNEE_MAX] | None = None,
        priority: str = "normal",
        due: app_commands.Range[str, 1, DUE_MAX] | None = None,
        description: app_commands.Range[str, 1, DESCRIPTION_MAX] | None = None,
    ) -> None:
        requester = self.requester(interaction)
        await self.check_assignee(interaction.guild, assignee)
        task = await self.tasks.add(
            requester, title, assignee=assignee, priority=priority, due=due, description=description
        )
        await self.announce(interaction, task, "created", requester)

    @task.command(name="move", description="Move a task to another status (operators)")
    @app_commands.describe(id="The task, e.g. T-42", status="Its new status", note="Why, or what was done")
    @app_commands.choices(status=STATUS_CHOICES)
    @require_level(AccessLevel.OPERATOR)
    async def move(
        self,
        interaction: discord.Interaction,
        id: app_commands.Range[str, 1, ID_MAX],
        status: str,
        note: app_commands.Range[str, 1, NOTE_MAX] | None = None,
    ) -> None:
        requester = self.requester(interaction)
        task = await self.tasks.move(requester, id, status, note=note)
        await self.announce(interaction, task, f"moved to {task.status.replace('_', ' ')}", requester)

    @task.command(name="assign", description="Give a task to an agent or a member (operators)")
    @app_commands.describe(
        id="The task, e.g. T-42",
        assignee="An agent, a member (pick one, or @username, a mention, user:<id>), or nobody",
    )
    @require_level(AccessLevel.OPERATOR)
    async def assign(
        self,
        interaction: discord.Interaction,
        id: app_commands.Range[str, 1, ID_MAX],
        assignee: app_commands.Range[str, 1, ASSIGNEE_MAX],
    ) -> None:
        requester = self.requester(interaction)
        await self.check_assignee(interaction.guild, assignee)
        task = await self.tasks.assign(requester, id, assignee_or_nobody(assignee))
        await self.announce(interaction, task, f"assigned to {task.assignee_text}", requester)

    @task.command(name="done", description="Mark a task done (operators)")
    @app_commands.describe(id="The task, e.g. T-42", note="What was done")
    @require_level(AccessLevel.OPERATOR)
    async def done(
        self,
        interaction: discord.Interaction,
        id: app_commands.Range[str, 1, ID_MAX],
        note: app_commands.Range[str, 1, NOTE_MAX] | None = None,
    ) -> None:
        requester = self.requester(interaction)
        task = await self.tasks.done(requester, id, note)
        await self.announce(interaction, task, "done", requester)

    @task.command(name="block", description="Mark a task blocked, saying why (operators)")
    @app_commands.describe(id="The task, e.g. T-42", reason="What it is waiting for")
    @require_level(AccessLevel.OPERATOR)
    async def block(
        self,
        interaction: discord.Interaction,
        id: app_commands.Range[str, 1, ID_MAX],
        reason: app_commands.Range[str, 1, NOTE_MAX],
    ) -> None:
        requester = self.requester(interaction)
        task = await self.tasks.block(requester, id, reason)
        await self.announce(interaction, task, "blocked", requester)

    # --- reads (viewers) ------------------------------------------------------------------------

    @task.command(name="show", description="A task with its history, and Start / Done / Block buttons")
    @app_commands.describe(id="The task, e.g. T-42")
    async def show(self, interaction: discord.Interaction, id: app_commands.Range[str, 1, ID_MAX]) -> None:
        requester = self.requester(interaction)
        detail = await self.tasks.show(id)
        if requester.level < AccessLevel.OPERATOR:  # buttons a viewer could only be refused by are left out
            await interaction.response.send_message(
                embeds=detail_embeds(detail), ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return
        view = TaskView(self, detail.task, interaction)
        await interaction.response.send_message(
            embeds=detail_embeds(detail), view=view, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
        self.views.add(view)

    @task.command(name="list", description="Tasks, most urgent first (open ones unless you pick a status)")
    @app_commands.describe(
        assignee="Only this agent's or member's", status="Only in this status (default: open)", mine="Only yours"
    )
    @app_commands.choices(status=LIST_STATUS_CHOICES)
    async def list_tasks(
        self,
        interaction: discord.Interaction,
        assignee: app_commands.Range[str, 1, ASSIGNEE_MAX] | None = None,
        status: str = "open",
        mine: bool = False,
    ) -> None:
        if mine and assignee:
            raise InvalidInput("give either `assignee` or `mine`, not both")
        await self.check_assignee(interaction.guild, assignee)
        who = f"user:{interaction.user.id}" if mine else assignee
        if status == "open":
            found = await self.tasks.list(assignee=who, open_only=True, limit=LIST_LIMIT)
        else:
            found = await self.tasks.list(assignee=who, status=None if status == "all" else status, limit=LIST_LIMIT)
        filters = [
            "yours" if mine else (f"assignee {plain(assignee, ASSIGNEE_MAX)}" if assignee else ""),
            f"status {status.replace('_', ' ')}",
        ]
        description = "Filtered: " + ", ".join(f for f in filters if f)
        if not found:
            description += "\nNo tasks match."
        elif len(found) == LIST_LIMIT:
            description += f"\nThe first {LIST_LIMIT} are shown."
        await send_listing(
            interaction,
            "Tasks",
            [listing_field(task) for task in found],
            description=description,
            per_page=PAGE_SIZE,
            views=self.views,
        )

    # --- autocomplete -------------------------------------------------------------------------

    @move.autocomplete("id")
    @assign.autocomplete("id")
    @done.autocomplete("id")
    @block.autocomplete("id")
    @show.autocomplete("id")
    async def task_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Tasks by id prefix or title words, open ones first: "T-42 · Mesh the M2 mirror"."""
        typed = current.strip()
        found = await self.tasks.search("" if _BARE_PREFIX.fullmatch(typed) else typed, limit=25)
        return [app_commands.Choice(name=clip(f"{t.display_id} · {t.title}", 100), value=t.display_id) for t in found]

    @add.autocomplete("assignee")
    @assign.autocomplete("assignee")
    @list_tasks.autocomplete("assignee")
    async def assignee_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Agents, then people: those whose username or nickname starts with what was typed (Discord finds
        them; the bot caches no members) and those seen lately whose names hold it."""
        typed = current.strip().lstrip("@").casefold()
        config = self.bot.services.config
        choices = [
            app_commands.Choice(name=f"{agent.name} (agent)", value=agent.name)
            for agent in config.agents
            if typed in agent.name.casefold()
        ]
        agent_ids = {agent.discord_user_id for agent in config.agents}
        directory = self.use_guild(interaction.guild)
        people: list[discord.Member] = []
        if directory is not None:
            directory.remember([interaction.user])  # "me" is always on offer
            people = await directory.search(typed)
        choices += [
            app_commands.Choice(name=clip(f"@{member_label(member)}", 100), value=f"user:{member.id}")
            for member in people
            if not member.bot and str(member.id) not in agent_ids
        ]
        return choices[:25]


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Tasks(bot))
