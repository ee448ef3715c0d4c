"""/workflow, one thread and one live card per run, approval buttons, and the agents' answers in the thread.

Thin: the engine (bot/workflows/engine.py) starts, decides and records; this cog translates. A run started
here gets a thread where every step delivers (`to: channel:<thread id>`) and a card at the top, redrawn on
every change of the run whatever made it (a command here, a button, the API or the CLI in this process, or
another process: the CLI's `workflow approve`, seen by polling the run's events), at most once per 2 s per
message, never losing the last state (bot.boards.CoalescedBoard). A run started from the CLI or the API gets
a thread in #technical as soon as this bot sees it: its card and its later steps' answers go there, while
the answers of steps dispatched before went to the run's origin or the default channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.authz import AccessLevel, Requester
from bot.boards import (
    TOTAL_MAX,
    BoardContent,
    BoardField,
    CoalescedBoard,
    LiveBoard,
    MessageGone,
    Monotonic,
    Sleep,
    clip,
    paginate,
)
from bot.discord_bot import NO_MENTIONS, requester_for, requester_for_user, require_level
from bot.errors import AtomizerError, InvalidInput
from bot.workflows.engine import WorkflowEngine
from bot.workflows.store import parse_run_id
from bot.workflows.view import one_line, run_card, waiting_gates
from cogs.utils.boards import DiscordBoardPublisher, to_embed
from cogs.utils.views import AtomizerModal

if TYPE_CHECKING:
    from bot.discord_bot import AtomizerBot

log = logging.getLogger(__name__)

CARD_EDIT_INTERVAL_S = 2.0  # at most one edit per card message per this long (Discord's per-channel budget)
OTHER_PROCESSES_EVERY_S = 2.0  # how often runs changed by another process (the CLI) are looked for
THREAD_CHANNEL = "technical"  # where a run's thread opens when the command was typed where none can
ONE_STEP_RUNS = frozenset({"delegate"})  # `delegate --wait-result`: answers go to its origin, no thread
EMBEDS_MAX = 10
REASON_MAX = 500  # a rejection's reason, as /workflow reject takes it
MODAL_TITLE_MAX = 45  # Discord's limit for a modal's title
REJECT_FORM_TIMEOUT_S = 900.0  # an open reject form is dropped after this long (the gate may be long decided)
_INPUT_SPLIT = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*=)")
_STEP = r"[a-z0-9_-]{1,64}"


def parse_inputs_text(text: str | None) -> dict[str, str]:
    """`mirror=M1, fine=true` -> {"mirror": "M1", "fine": "true"}; a value may hold commas not followed by `k=`."""
    inputs: dict[str, str] = {}
    for pair in _INPUT_SPLIT.split(text or ""):
        if not pair.strip():
            continue
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInput(
                f"input {pair.strip()!r}: write NAME=VALUE, several separated by commas (mirror=M1, fine=true)"
            )
        if name in inputs:
            raise InvalidInput(f"input {name} is given twice; give each input once")
        inputs[name] = value.strip()
    return inputs


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


# --- the card's buttons: persistent, decoded from their custom_id after any restart ------------------


class GateButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"wf:(?P<action>approve|reject):(?P<run>[0-9]{{1,18}}):(?P<step>{_STEP})",
):
    """Approve / Reject one gate of one run. The engine checks the clicker, at the click, every time."""

    def __init__(self, action: str, run_id: int, step_id: str) -> None:
        approve = action == "approve"
        super().__init__(
            discord.ui.Button(
                label=clip(f"{'Approve' if approve else 'Reject'} {step_id}", 80),
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                custom_id=f"wf:{action}:{run_id}:{step_id}",
            )
        )
        self.action, self.run_id, self.step_id = action, run_id, step_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> GateButton:
        return cls(match["action"], int(match["run"]), match["step"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Workflows")  # type: ignore[attr-defined]
        try:
            if cog is None:
                raise InvalidInput("workflows are not loaded in this bot right now; try again in a minute")
            await cog.decide(interaction, self.run_id, self.step_id, approve=self.action == "approve")
        except Exception as exc:  # refusals and conflicts look as every command's do
            await interaction.client.tree.on_error(interaction, exc)  # type: ignore[attr-defined,arg-type]


class RejectModal(AtomizerModal):
    """Why the gate is rejected: required, as everywhere (a rejection fails the run; its starter must learn what
    to change). Stored with the decision, shown on the card, in `workflow show` and in the audit."""

    reason: discord.ui.TextInput[RejectModal] = discord.ui.TextInput(
        label="Why reject it?",
        style=discord.TextStyle.paragraph,
        placeholder="the mesh is too coarse near the mount points",
        required=True,
        max_length=REASON_MAX,
    )

    def __init__(self, cog: Workflows, run_id: int, step_id: str) -> None:
        super().__init__(title=clip(f"Reject W-{run_id}/{step_id}", MODAL_TITLE_MAX), timeout=REJECT_FORM_TIMEOUT_S)
        self.cog, self.run_id, self.step_id = cog, run_id, step_id

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        await self.cog.reject_with(interaction, self.run_id, self.step_id, self.reason.value)


def gate_view(run_id: int, gates: list[str]) -> discord.ui.View | None:
    """Two buttons per open gate, one row each (Discord allows 5 rows)."""
    if not gates:
        return None
    view = discord.ui.View(timeout=None)
    for row, step_id in enumerate(gates[:5]):
        for action in ("approve", "reject"):
            button = GateButton(action, run_id, step_id)
            button.item.row = row
            view.add_item(button)
    return view


class CardPublisher(DiscordBoardPublisher):
    """Posts and edits one run's card, with the buttons of its open gates on the first message."""

    def __init__(self, client: discord.Client, config_file: str, run_id: int) -> None:
        super().__init__(client, config_file)
        self.run_id = run_id
        self.gates: list[str] = []
        self.first_title = ""
        self.posted_first: str | None = None

    def _view(self, content: BoardContent) -> discord.ui.View | None:
        return gate_view(self.run_id, self.gates) if content.title == self.first_title else None

    async def post(self, channel_id: str, content: BoardContent) -> str:
        channel = self._channel(channel_id)
        view = self._view(content)
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        message = await channel.send(embed=to_embed(content), allowed_mentions=NO_MENTIONS, **kwargs)
        self._posted[str(message.id)] = message
        if content.title == self.first_title:
            self.posted_first = str(message.id)
        return str(message.id)

    async def edit(self, channel_id: str, message_id: str, content: BoardContent) -> None:
        target: Any = self._posted.get(message_id)
        try:
            if target is None:
                channel = self._channel(channel_id)
                if not isinstance(channel, discord.TextChannel | discord.Thread):
                    raise MessageGone(f"cannot edit in channel {channel_id}")
                target = channel.get_partial_message(int(message_id))
            self._posted[message_id] = await target.edit(embed=to_embed(content), view=self._view(content))
        except discord.NotFound:
            self._posted.pop(message_id, None)
            raise MessageGone(f"card message {message_id} was deleted") from None


# --- the cog ----------------------------------------------------------------------------------


class Workflows(commands.Cog):
    """/workflow …, the runs' threads and cards, and answers read in those threads."""

    workflow = require_level(AccessLevel.VIEWER)(
        app_commands.Group(name="workflow", description="Workflows: list, show, run, approve, cancel, retry")
    )

    def __init__(
        self, bot: AtomizerBot, *, sleep: Sleep = asyncio.sleep, monotonic: Monotonic = time.monotonic
    ) -> None:
        self.bot = bot
        self._sleep = sleep
        self._monotonic = monotonic
        self.cards: dict[int, CoalescedBoard] = {}
        self._publishers: dict[int, CardPublisher] = {}
        self._dirty: set[int] = set()
        self._pump: asyncio.Task[None] | None = None
        self.follower: asyncio.Task[None] | None = None
        self._seen_event = 0
        self._answer_order: dict[int, asyncio.Lock] = {}

    @property
    def engine(self) -> WorkflowEngine:
        return self.bot.services.workflows

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(GateButton)
        self.engine.add_listener(self._run_changed)
        row = await self.bot.services.store.fetchone("SELECT max(id) FROM workflow_events")
        self._seen_event = int(row[0] or 0) if row is not None else 0
        if self.bot.background_tasks:
            self.follower = asyncio.create_task(self._follow_other_processes(), name="workflow-follower")

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(GateButton)
        with contextlib.suppress(ValueError):
            self.engine._listeners.remove(self._run_changed)
        for task in (self.follower, self._pump):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for card in self.cards.values():
            await card.close()

    # --- cards ----------------------------------------------------------------------------------

    def _run_changed(self, run_ref: str) -> None:
        """The engine's listener: never waits (it runs inside the engine's calls); the pump does the work."""
        self.touch(parse_run_id(run_ref))

    def touch(self, run_id: int) -> None:
        self._dirty.add(run_id)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._drain(), name="workflow-cards")

    async def _drain(self) -> None:
        while self._dirty:
            run_id = min(self._dirty)
            self._dirty.discard(run_id)
            try:
                await self._follow(run_id)
            except Exception:
                log.exception("workflow W-%d: could not update its thread or card", run_id)

    async def _follow(self, run_id: int) -> None:
        run = (await self.engine.get(run_id)).run
        thread_id = run.thread_id
        if thread_id is None:
            if run.status != "running" or run.workflow in ONE_STEP_RUNS:
                return
            thread_id = await self._open_thread_for(run.display_id, run.workflow, run.starter)
            if thread_id is None:
                return
            await self.engine.set_thread(run.id, thread_id)
            log.info("%s (started from %s) follows in thread %s", run.display_id, run.front_end, thread_id)
        self.card(run.id, thread_id).request()

    async def _open_thread_for(self, display_id: str, workflow: str, starter: str) -> str | None:
        channel_id = self.bot.services.config.channels.get(THREAD_CHANNEL)
        channel = self.bot.get_channel(int(channel_id)) if channel_id else None
        if not isinstance(channel, discord.TextChannel):
            log.warning("%s: no #%s channel to open its thread in; it runs without one", display_id, THREAD_CHANNEL)
            return None
        thread = await channel.create_thread(
            name=clip(f"{display_id} {workflow} ({starter})", 100), type=discord.ChannelType.public_thread
        )
        return str(thread.id)

    def card(self, run_id: int, thread_id: str) -> CoalescedBoard:
        card = self.cards.get(run_id)
        if card is None or card.board.channel_id != thread_id:
            publisher = CardPublisher(self.bot, self.bot.services.config.source, run_id)
            live = LiveBoard(f"workflow:W-{run_id}", thread_id, self.bot.services.store, publisher)
            card = CoalescedBoard(
                live,
                lambda: self.render(run_id),
                min_interval_s=CARD_EDIT_INTERVAL_S,
                sleep=self._sleep,
                monotonic=self._monotonic,
            )
            self.cards[run_id] = card
            self._publishers[run_id] = publisher
        return card

    async def render(self, run_id: int) -> list[BoardContent]:
        """The card as the database holds it now (called at redraw time, so the latest state is drawn)."""
        detail = await self.engine.get(run_id)
        parts = run_card(detail)
        publisher = self._publishers[run_id]
        publisher.gates = waiting_gates(detail)
        publisher.first_title = parts[0].title
        return parts

    async def settle(self) -> None:
        """Until every requested redraw is done (tests, shutdown)."""
        while self._pump is not None and not self._pump.done():
            await asyncio.shield(self._pump)
        for card in list(self.cards.values()):
            await card.settle()

    async def check_other_processes(self) -> None:
        """Redraw the runs another process changed (their events are in the shared database)."""
        rows = await self.bot.services.store.fetchall(
            "SELECT id, run_id FROM workflow_events WHERE id > ? ORDER BY id", (self._seen_event,)
        )
        for row in rows:
            self._seen_event = max(self._seen_event, int(row[0]))
            self.touch(int(row[1]))

    async def _follow_other_processes(self) -> None:
        await self.bot.wait_until_ready()
        while True:
            await self._sleep(OTHER_PROCESSES_EVERY_S)
            try:
                await self.check_other_processes()
            except Exception:
                log.exception("workflows: looking for runs changed elsewhere failed; looking again later")

    # --- answers in a run's thread ----------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """An agent's post where one of its running steps delivers is (part of) that step's output."""
        if message.guild is None or not message.author.bot or message.webhook_id is not None:
            return
        if self.bot.user is not None and message.author.id == self.bot.user.id:
            return
        requester = requester_for_user(message.author, self.bot.services.config)
        if not requester.is_agent:
            return
        # One post at a time per channel, taken before any await: a chunked answer is joined in posting order.
        async with self._answer_order.setdefault(message.channel.id, asyncio.Lock()):
            await self._take_answer(message, requester)

    async def _take_answer(self, message: discord.Message, requester: Requester) -> None:
        step = await self.engine.step_answering_in(requester.name, str(message.channel.id))
        if step is None:
            return
        try:
            await self.engine.append_output(replace(requester, front_end="discord"), step.run_id, step.step_id,
                                            message.content)  # fmt: skip
        except AtomizerError as exc:  # the step ended meanwhile: the post is only a message
            log.info("%s's post %s is not taken as output: %s", requester.name, message.id, exc)

    # --- buttons ----------------------------------------------------------------------------------

    async def decide(self, interaction: discord.Interaction, run_id: int, step_id: str, *, approve: bool) -> None:
        """Approve at once; Reject asks why first (a form), once the engine says this person may decide."""
        requester = requester_for(interaction, self.bot.services.config)
        if not approve:
            await self.engine.check_decision(requester, run_id, step_id)
            await interaction.response.send_modal(RejectModal(self, run_id, step_id))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await self.engine.approve(requester, run_id, step_id, approve=True)
        await interaction.followup.send(self._outcome_text(run_id, step_id, True, outcome), ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)  # fmt: skip

    async def reject_with(self, interaction: discord.Interaction, run_id: int, step_id: str, reason: str) -> None:
        """The reject form's submit: the decision is checked again (the gate may have moved while they typed)."""
        requester = requester_for(interaction, self.bot.services.config)
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await self.engine.approve(requester, run_id, step_id, approve=False, reason=reason)
        await interaction.followup.send(self._outcome_text(run_id, step_id, False, outcome), ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)  # fmt: skip

    @staticmethod
    def _outcome_text(run_id: int, step_id: str, approve: bool, outcome: Any) -> str:
        where = f"W-{run_id}/{step_id}"
        if not approve:
            return f"You rejected {where}: the gate is {outcome.status}."
        if outcome.decided:
            return f"You approved {where} ({outcome.approvals}/{outcome.quorum}): the gate is {outcome.status}."
        return f"Your approval of {where} is recorded ({outcome.approvals}/{outcome.quorum}); it waits for more."

    # --- commands ---------------------------------------------------------------------------------

    @workflow.command(name="list", description="The workflows you can run, and recent runs")
    async def list_workflows(self, interaction: discord.Interaction) -> None:
        catalog = self.engine.catalog
        entries = catalog.entries() if catalog is not None and hasattr(catalog, "entries") else []
        fields = []
        for entry in entries:
            if entry.broken or entry.workflow is None:
                fields.append(
                    BoardField(f"⚠️ {entry.name or entry.file}", one_line("broken: " + "; ".join(entry.problems), 1000))
                )
                continue
            definition = entry.workflow.definition
            fields.append(
                BoardField(definition.name, one_line(f"{definition.description} ({len(definition.steps)} steps)", 1000))
            )
        runs = await self.engine.runs(limit=10)
        if runs:
            lines = [f"{run.display_id} · {run.workflow} · {run.status} · {run.starter}" for run in runs]
            fields.append(BoardField("Recent runs", "\n".join(one_line(line, 100) for line in lines)))
        description = "" if entries else "No workflow files in the workflows directory ([workflows] dir)."
        parts = paginate("Workflows", fields, description=description, footer="/workflow run name: inputs:")
        await interaction.response.send_message(embeds=fit_embeds(parts), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @workflow.command(name="show", description="A run: every step with its state, and its decisions")
    @app_commands.describe(run="The run, e.g. W-3")
    async def show(self, interaction: discord.Interaction, run: app_commands.Range[str, 1, 24]) -> None:
        detail = await self.engine.get(run)
        content = None
        if detail.run.thread_id:
            content = f"Its thread: <#{detail.run.thread_id}>"
        await interaction.response.send_message(content, embeds=fit_embeds(run_card(detail)), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)  # fmt: skip

    @workflow.command(name="run", description="Start a workflow in a thread of its own (operators)")
    @app_commands.describe(name="The workflow (see /workflow list)", inputs="NAME=VALUE, several separated by commas")
    @require_level(AccessLevel.OPERATOR)
    async def run(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        inputs: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        given = parse_inputs_text(inputs)
        # Every refusal comes before the thread exists (no empty threads), and privately.
        definition, _ = await self.engine.preflight(requester, name, given)
        await interaction.response.defer(thinking=True)
        parent = interaction.channel
        if not isinstance(parent, discord.TextChannel):  # a thread, a DM, a voice chat: #technical
            channel_id = self.bot.services.config.channels.get(THREAD_CHANNEL)
            parent = self.bot.get_channel(int(channel_id)) if channel_id else None
        if not isinstance(parent, discord.TextChannel):
            raise InvalidInput(f"no text channel to open the run's thread in; type /workflow run in #{THREAD_CHANNEL}")
        thread = await parent.create_thread(
            name=clip(f"{definition.name} ({requester.name})", 100), type=discord.ChannelType.public_thread
        )
        started = await self.engine.start(requester, definition, given, origin=f"channel:{parent.id}",
                                          thread_id=str(thread.id))  # fmt: skip
        await interaction.followup.send(
            f"{started.display_id} ({definition.name}) started by {discord.utils.escape_markdown(requester.name)}: "
            f"follow it in <#{thread.id}>",
            allowed_mentions=NO_MENTIONS,
        )

    @workflow.command(name="cancel", description="Cancel a run: nothing more is sent (operators)")
    @app_commands.describe(run="The run, e.g. W-3", reason="Why")
    @require_level(AccessLevel.OPERATOR)
    async def cancel(
        self,
        interaction: discord.Interaction,
        run: app_commands.Range[str, 1, 24],
        reason: app_commands.Range[str, 1, 500] | None = None,
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        await interaction.response.defer(thinking=True)
        cancelled = await self.engine.cancel(requester, run, reason=reason)
        await interaction.followup.send(
            clip(f"{cancelled.display_id} cancelled by {requester.name}" + (f": {reason}" if reason else ""), 2000),
            allowed_mentions=NO_MENTIONS,
        )

    @workflow.command(name="approve", description="Approve a run's gate (if you are one of its approvers)")
    @app_commands.describe(run="The run, e.g. W-3", step="The approval step", reason="Why (optional)")
    async def approve(
        self,
        interaction: discord.Interaction,
        run: app_commands.Range[str, 1, 24],
        step: app_commands.Range[str, 1, 64],
        reason: app_commands.Range[str, 1, 500] | None = None,
    ) -> None:
        await self._decide_command(interaction, run, step, True, reason)

    @workflow.command(name="reject", description="Reject a run's gate (if you are one of its approvers)")
    @app_commands.describe(run="The run, e.g. W-3", step="The approval step", reason="Why")
    async def reject(
        self,
        interaction: discord.Interaction,
        run: app_commands.Range[str, 1, 24],
        step: app_commands.Range[str, 1, 64],
        reason: app_commands.Range[str, 1, REASON_MAX],
    ) -> None:
        await self._decide_command(interaction, run, step, False, reason)

    async def _decide_command(
        self, interaction: discord.Interaction, run: str, step: str, approve: bool, reason: str | None
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        run_id = parse_run_id(run)
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await self.engine.approve(requester, run_id, step, approve=approve, reason=reason)
        await interaction.followup.send(self._outcome_text(run_id, step, approve, outcome), ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)  # fmt: skip

    @workflow.command(name="retry", description="Run a run again from a step, or from what failed (operators)")
    @app_commands.describe(run="The run, e.g. W-3", from_step="The step to run again from (default: what failed)")
    @require_level(AccessLevel.OPERATOR)
    async def retry(
        self,
        interaction: discord.Interaction,
        run: app_commands.Range[str, 1, 24],
        from_step: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        requester = requester_for(interaction, self.bot.services.config)
        await interaction.response.defer(thinking=True)
        retried = await self.engine.retry(requester, run, from_step=from_step)
        where = f" from {from_step}" if from_step else ""
        await interaction.followup.send(
            f"{retried.display_id} runs again{where}, as asked by {discord.utils.escape_markdown(requester.name)}",
            allowed_mentions=NO_MENTIONS,
        )

    # --- autocomplete -------------------------------------------------------------------------

    @run.autocomplete("name")
    async def name_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        catalog = self.engine.catalog
        names = catalog.names() if catalog is not None and hasattr(catalog, "names") else []
        typed = current.strip().lower()
        return [app_commands.Choice(name=name, value=name) for name in names if typed in name][:25]

    @show.autocomplete("run")
    @cancel.autocomplete("run")
    @approve.autocomplete("run")
    @reject.autocomplete("run")
    @retry.autocomplete("run")
    async def run_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        typed = current.strip().upper()
        runs = await self.engine.runs(limit=25)
        return [
            app_commands.Choice(name=clip(f"{r.display_id} · {r.workflow} · {r.status}", 100), value=r.display_id)
            for r in runs
            if typed in r.display_id or typed.lower() in r.workflow
        ]

    @approve.autocomplete("step")
    @reject.autocomplete("step")
    @retry.autocomplete("from_step")
    async def step_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        ref = getattr(interaction.namespace, "run", None)
        if not ref:
            return []
        try:
            detail = await self.engine.get(str(ref))
        except AtomizerError:
            return []
        return [
            app_commands.Choice(name=clip(f"{s.step_id} ({s.status.replace('_', ' ')})", 100), value=s.step_id)
            for s in detail.steps
            if current.strip().lower() in s.step_id
        ][:25]


async def setup(bot: AtomizerBot) -> None:
    await bot.add_cog(Workflows(bot))
