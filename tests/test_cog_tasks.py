"""/task, agents' posts in #task-board and the live board, through discord.py's real pipeline and dpytest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, cast

import discord
import discord.ext.test as dpytest
import pytest
from discord import app_commands

from bot.authz import AccessLevel, Requester, api_requester
from bot.discord_bot import AtomizerBot, bot_intents
from bot.services import Services
from bot.task_grammar import HINT
from bot.taskboard import Task, TaskBoard
from cogs.tasks import ACK, OTHER_PROCESSES_EVERY_S, Tasks
from cogs.utils.directory import DiscordGuildDirectory
from tests.clocks import days_from_today
from tests.discord_harness import (
    FakeMembers,
    RecordedCall,
    Recorder,
    SlashDriver,
    _channel_dict,
    _member_dict,
    _message_dict,
    give_level,
    guild_of,
    make_member,
    next_snowflake,
    running_test_bot,
    send_message,
    single_message,
)
from tests.robustness.conftest import wait_for

TASK_BOARD = 100000000000000102  # [channels] task_board in the shipped config
NX_EXPERT = 100000000000000307  # nx-expert's discord_user_id
WEBSTER = 100000000000000308
NO_MENTIONS = {"parse": []}
INTERVAL = 2.0  # [taskboard] min_edit_interval_s
VIEW_TASK_PREFIX = "discord-ui-view-dispatch"
MODAL_TASK_PREFIX = "discord-ui-modal-dispatch"
OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)


# --- harness ----------------------------------------------------------------------------------


class FakeTime:
    """monotonic() and sleep() on a clock only the test moves; `deadlines` says who waits for what."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.deadlines: list[float] = []
        self.sleeping = asyncio.Event()
        self._moved = asyncio.Condition()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        self.deadlines.append(until)
        self.sleeping.set()
        try:
            async with self._moved:
                await self._moved.wait_for(lambda: self.now >= until)
        finally:
            self.deadlines.remove(until)

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        async with self._moved:
            self._moved.notify_all()


@dataclass
class Sent:
    """A message the bot sent to a channel, as it went on the wire."""

    channel_id: int
    payload: dict[str, Any]

    @property
    def content(self) -> str:
        return self.payload.get("content") or ""


@dataclass
class Rig:
    bot: AtomizerBot
    services: Services
    driver: SlashDriver
    board_channel: discord.TextChannel
    clock: FakeTime
    webhook_calls: list[RecordedCall] = field(default_factory=list)  # clicks and modal submits
    sent: list[Sent] = field(default_factory=list)  # channel messages: replies, board posts
    edits: list[tuple[int, float]] = field(default_factory=list)  # (message id, fake time) of each edit

    @property
    def cog(self) -> Tasks:
        cog = self.bot.get_cog("Tasks")
        assert cog is not None and type(cog).__qualname__ == "Tasks"
        return cast(Tasks, cog)

    @property
    def general(self) -> discord.TextChannel:
        return guild_of(self.bot).text_channels[0]

    def member(self, level: AccessLevel, name: str | None = None) -> discord.Member:
        return give_level(make_member(self.bot, name or level.label), level, self.services.config)

    def agent(self, user_id: int = NX_EXPERT, name: str = "nx-expert") -> discord.Member:
        """The agent's own bot account, as the config knows it."""
        return make_member(self.bot, name, user_id=user_id, is_bot=True)

    async def post(self, content: str, member: discord.Member, channel: discord.TextChannel | None = None) -> int:
        """Someone posts in #task-board (or `channel`); returns the message id."""
        message = await send_message(self.bot, content, channel=channel or self.board_channel, member=member)
        return message.id

    def stored(self, channel_id: int = TASK_BOARD) -> list[dict[str, Any]]:
        """A channel as Discord holds it (dpytest's store, which edits update in place)."""
        return list(dpytest.backend._cur_config.messages.get(channel_id, []))

    def boards(self) -> list[dict[str, Any]]:
        """The live board's messages in #task-board, oldest first."""
        bot_id = self.bot.user.id if self.bot.user else 0
        return [m for m in self.stored() if m.get("embeds") and int(m["author"]["id"]) == bot_id]

    def my_reactions(self, message_id: int) -> list[str]:
        [message] = [m for m in self.stored() if int(m["id"]) == message_id]
        return [r["emoji"]["name"] for r in message.get("reactions", []) if r.get("me")]

    def replies_to(self, message_id: int) -> list[Sent]:
        return [s for s in self.sent if (s.payload.get("message_reference") or {}).get("message_id") == message_id]

    async def settle(self) -> None:
        """Let every requested redraw happen, moving the fake clock exactly as far as the coalescer waits."""
        coalesced = self.cog.coalesced
        assert coalesced is not None
        finished = asyncio.ensure_future(coalesced.settle())
        while not finished.done():
            self.clock.sleeping.clear()
            if self.clock.deadlines:
                due = min(self.clock.deadlines)
                if due > self.clock.now:
                    await self.clock.advance(due - self.clock.now)
                else:
                    await asyncio.sleep(0)  # a woken sleeper has yet to run
                continue
            waiting = asyncio.ensure_future(self.clock.sleeping.wait())
            await asyncio.wait({finished, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        await finished

    # --- components ---------------------------------------------------------------------------

    def _component_payload(self, interaction_type: int, user: discord.Member, message_id: int, data: dict) -> dict:
        channel = self.general
        return {
            "id": str(next_snowflake()),
            "application_id": str(self.bot.application_id),
            "type": interaction_type,
            "token": f"interaction-token-{next_snowflake()}",
            "version": 1,
            "attachment_size_limit": 26_214_400,
            "guild_id": str(channel.guild.id),
            "channel_id": str(channel.id),
            "channel": _channel_dict(channel, str(discord.Permissions.all().value)),
            "member": _member_dict(user),
            "app_permissions": str(discord.Permissions.all().value),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(channel.guild.id)},
            "context": 0,
            "message": _message_dict({}, str(channel.id), None) | {"id": str(message_id)},
            "data": data,
        }

    async def _run(self, payload: dict, prefix: str) -> list[RecordedCall]:
        before = len(self.webhook_calls)
        running = {task for task in asyncio.all_tasks() if task.get_name().startswith(prefix)}
        self.bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        started = [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and t not in running]
        assert started, "the interaction reached no view or modal"
        await asyncio.gather(*started)
        return self.webhook_calls[before:]

    async def click(self, label: str, *, user: discord.Member) -> list[RecordedCall]:
        """Click the newest live button labelled `label`, as `user`."""
        store = self.bot._connection._view_store
        found = [
            (message_id, custom_id)
            for message_id, items in store._views.items()
            for (_, custom_id), item in items.items()
            if getattr(item, "label", None) == label and message_id is not None
        ]
        assert found, f"no live button labelled {label!r}"
        message_id, custom_id = max(found)
        payload = self._component_payload(3, user, message_id, {"custom_id": custom_id, "component_type": 2})
        return await self._run(payload, VIEW_TASK_PREFIX)

    async def submit(self, reason: str, *, user: discord.Member, message_id: int) -> list[RecordedCall]:
        """Submit the open modal (the Block form) with `reason`."""
        [modal] = self.bot._connection._view_store._modals.values()
        [text_input] = [item for item in modal.children if isinstance(item, discord.ui.TextInput)]
        components = [{"type": 1, "components": [{"type": 4, "custom_id": text_input.custom_id, "value": reason}]}]
        payload = self._component_payload(5, user, message_id, {"custom_id": modal.custom_id, "components": components})
        return await self._run(payload, MODAL_TASK_PREFIX)


def patch_fake_discord(monkeypatch: pytest.MonkeyPatch, bot: AtomizerBot, rig: Rig) -> None:
    """Fill three gaps of dpytest 0.7 against discord.py 2.7, as Discord itself behaves."""
    http = type(bot.http)
    state = bot._connection

    # Reactions: discord.py 2.7 reads the event's `type`, which dpytest does not send.
    parse_reaction = state.parse_message_reaction_add
    monkeypatch.setattr(state, "parse_message_reaction_add", lambda data: parse_reaction({"type": 0, **data}))

    # Edits: dpytest can edit only a full Message; a board found again after a restart edits by id.
    async def edit_message(self: Any, channel_id: int, message_id: int, **fields: Any) -> dict[str, Any]:
        stored = [m for m in rig.stored(int(channel_id)) if int(m["id"]) == int(message_id)]
        if not stored:
            raise discord.NotFound(dpytest.backend.FakeRequest(404, "Not Found"), "Unknown Message")
        stored[0].update(fields["params"].payload)
        rig.edits.append((int(message_id), rig.clock.now))
        return stored[0]

    monkeypatch.setattr(http, "edit_message", edit_message)

    # Sends: record what went on the wire (dpytest keeps neither the reference nor allowed mentions).
    send_message = http.send_message

    async def recording_send(self: Any, channel_id: int, *, params: Any) -> Any:
        rig.sent.append(Sent(int(channel_id), dict(params.payload or {})))
        channel = bot.get_channel(int(channel_id))  # noqa: F841 - dpytest finds the channel in its caller's locals
        return await send_message(self, channel_id, params=params)

    monkeypatch.setattr(http, "send_message", recording_send)


@pytest.fixture
async def rig(services: Services, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    recorder = Recorder()  # clicks and modal submits, answered outside SlashDriver.dispatch
    recorder.install(monkeypatch)
    calls = recorder.calls
    async with running_test_bot(services) as bot:
        board_channel = dpytest.backend.make_text_channel("task-board", guild_of(bot), id_num=TASK_BOARD)
        clock = FakeTime()
        rig = Rig(bot, services, SlashDriver(bot), board_channel, clock, calls)
        patch_fake_discord(monkeypatch, bot, rig)
        # The cog again, paced by the fake clock: no test waits for real time.
        cog_class = type(rig.cog)
        await bot.remove_cog("Tasks")
        await bot.add_cog(cog_class(bot, sleep=clock.sleep, monotonic=clock.monotonic))
        yield rig
        await rig.settle()


async def add(rig: Rig, title: str, **options: Any) -> Task:
    return await rig.services.tasks.add(OPERATOR, title, **options)


def shape(calls: list[RecordedCall]) -> list[tuple[str, int | None]]:
    return [(call.kind, call.type) for call in calls]


def board_text(message: dict[str, Any]) -> str:
    parts = []
    for data in message["embeds"]:
        embed = discord.Embed.from_dict(data)
        parts += [embed.title or "", embed.description or ""] + [f"{f.name}\n{f.value}" for f in embed.fields]
    return "\n".join(parts)


def buttons(call: RecordedCall) -> dict[str, bool]:
    """label -> disabled, for the buttons a message carries."""
    return {
        button["label"]: bool(button.get("disabled"))
        for row in call.message.get("components") or []
        for button in row["components"]
    }


# --- /task add, move, assign, done, block -------------------------------------------------------


async def test_an_operator_adds_a_task_and_the_channel_is_told(rig: Rig) -> None:
    due = days_from_today(40)
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")

    calls = await rig.driver.invoke(
        "task add",
        user=operator,
        options={
            "title": "Mesh the M2 mirror",
            "assignee": "nx-expert",
            "priority": "high",
            "due": due,
            "description": "Use the **fine** mesh\n<@100000000000000900> knows why",
        },
    )

    answer = single_message(calls)
    assert answer.type == 4 and not answer.ephemeral and answer.allowed_mentions == NO_MENTIONS
    assert answer.content is not None and answer.content.startswith("**T-1** created by Antoine")
    assert "nx-expert" in answer.content and f"due {due}" in answer.content
    detail = await rig.services.tasks.show("T-1")
    task = detail.task
    assert (task.title, task.assignee, task.priority, task.due) == (
        "Mesh the M2 mirror",
        "nx-expert",
        "high",
        due,
    )
    assert task.description == "Use the **fine** mesh\n<@100000000000000900> knows why"
    [created] = detail.history
    assert (created.actor, created.front_end, created.action) == ("Antoine", "discord", "create")


async def test_move_assign_done_and_block_change_the_task_and_say_so(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    vera = make_member(rig.bot, "vera")
    await add(rig, "Mesh the M2 mirror")

    moved = single_message(
        await rig.driver.invoke("task move", user=operator, options={"id": "T-1", "status": "review", "note": "look"})
    )
    assigned = single_message(
        await rig.driver.invoke("task assign", user=operator, options={"id": "1", "assignee": "@vera"})
    )
    blocked = single_message(
        await rig.driver.invoke("task block", user=operator, options={"id": "t1", "reason": "waiting for the licence"})
    )
    done = single_message(await rig.driver.invoke("task done", user=operator, options={"id": "T-1", "note": "42k"}))

    assert "**T-1** moved to review by Antoine" in (moved.content or "")
    assert "**T-1** assigned to @vera by Antoine" in (assigned.content or "")
    assert "**T-1** blocked by Antoine" in (blocked.content or "")
    assert "**T-1** done by Antoine" in (done.content or "")
    assert all(not c.ephemeral and c.allowed_mentions == NO_MENTIONS for c in (moved, assigned, blocked, done))
    detail = await rig.services.tasks.show("T-1")
    assert (detail.task.status, detail.task.assignee_kind, detail.task.assignee) == ("done", "user", str(vera.id))
    assert [(e.action, e.new_value, e.note) for e in detail.history[1:]] == [
        ("move", "review", "look"),
        ("assign", "@vera", None),
        ("move", "blocked", "waiting for the licence"),
        ("move", "done", "42k"),
    ]
    assert {e.front_end for e in detail.history[1:]} == {"discord"}

    await rig.driver.invoke("task assign", user=operator, options={"id": "T-1", "assignee": f"user:{vera.id}"})
    await rig.driver.invoke("task assign", user=operator, options={"id": "T-1", "assignee": "nobody"})
    assert (await rig.services.tasks.get(1)).assignee is None


async def test_writes_need_the_operator_level_and_reads_the_viewer_level(rig: Rig) -> None:
    await add(rig, "Mesh")
    viewer = rig.member(AccessLevel.VIEWER, "Vera")

    for name, options in [
        ("task add", {"title": "x"}),
        ("task move", {"id": "T-1", "status": "done"}),
        ("task assign", {"id": "T-1", "assignee": "webster"}),
        ("task done", {"id": "T-1"}),
        ("task block", {"id": "T-1", "reason": "x"}),
    ]:
        [refused] = await rig.driver.invoke(name, user=viewer, options=options)
        assert refused.ephemeral and "You need the operator level" in (refused.content or ""), name
    [listed] = await rig.driver.invoke("task list", user=make_member(rig.bot, "newcomer"))
    assert listed.ephemeral and "You need the viewer level" in (listed.content or "")
    assert (await rig.services.tasks.get(1)).version == 1 and await rig.services.tasks.count() == 1


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("task done", {"id": "T-99"}, "no task T-99"),
        ("task move", {"id": "banana", "status": "done"}, "is not a task id; write it as T-42"),
        ("task block", {"id": "T-1", "reason": "   "}, "say why the task is blocked"),
        ("task add", {"title": "x", "due": "someday"}, "is not a due date"),
        ("task add", {"title": "x" * 201}, "at most 200"),
        ("task assign", {"id": "T-1", "assignee": "#task-board"}, "is a channel"),
        ("task list", {"assignee": "webster", "mine": True}, "either `assignee` or `mine`"),
    ],
)
async def test_the_cores_refusals_are_answered_privately(rig: Rig, name: str, options: dict, expected: str) -> None:
    await add(rig, "Mesh")

    [refused] = await rig.driver.invoke(name, user=rig.member(AccessLevel.ADMIN), options=options)

    assert refused.type == 4 and refused.ephemeral and expected in (refused.content or "")
    assert (await rig.services.tasks.get(1)).version == 1


# --- /task show and its buttons -----------------------------------------------------------------


async def test_show_has_the_history_and_start_done_block_buttons(rig: Rig) -> None:
    await add(rig, "Mesh the M2 mirror", assignee="nx-expert")
    await rig.services.tasks.move(api_requester("nx-expert", rig.services.config), 1, "in_progress", note="meshing")

    [shown] = await rig.driver.invoke("task show", user=rig.member(AccessLevel.OPERATOR), options={"id": "T-1"})
    [read] = await rig.driver.invoke("task show", user=rig.member(AccessLevel.VIEWER), options={"id": "T-1"})

    assert read.ephemeral and read.text == shown.text and not read.message.get("components")  # viewers only read
    assert shown.type == 4 and shown.ephemeral
    assert shown.embeds[0].title == "T-1 · Mesh the M2 mirror"
    text = shown.text
    assert "T-1 created by antoine: Mesh the M2 mirror (cli)" in text
    assert "T-1 todo → in_progress by nx-expert: meshing (api)" in text
    fields = {f.name: f.value for f in shown.embeds[0].fields}
    assert fields["version"] == "2"
    assert buttons(shown) == {"Start": True, "Done": False, "Block": False}  # already started


async def test_buttons_apply_with_the_version_they_showed_and_show_the_new_state(rig: Rig) -> None:
    await add(rig, "Mesh")
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    await rig.driver.invoke("task show", user=operator, options={"id": "T-1"})

    started = await rig.click("Start", user=operator)
    assert shape(started) == [("callback", 7)]  # the same message, updated
    assert "in_progress" in started[0].text and buttons(started[0]) == {"Start": True, "Done": False, "Block": False}
    done = await rig.click("Done", user=operator)  # carries version 2 now, not 1

    assert shape(done) == [("callback", 7)]
    assert {f.name: f.value for f in done[0].embeds[0].fields}["version"] == "3"
    history = (await rig.services.tasks.show(1)).history
    assert [(e.new_value, e.actor, e.front_end) for e in history[1:]] == [
        ("in_progress", "Antoine", "discord"),
        ("done", "Antoine", "discord"),
    ]


async def test_a_stale_button_is_a_conflict_answered_privately_never_an_overwrite(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    await rig.driver.invoke("task show", user=operator, options={"id": "T-1"})  # shows version 1
    await rig.post("T-1 done: meshed", rig.agent())  # meanwhile, from #task-board: version 2

    [conflict] = await rig.click("Start", user=operator)

    assert conflict.type == 4 and conflict.ephemeral
    assert "T-1 changed since you read it (you had version 1, it is now 2: done, nx-expert" in (conflict.content or "")
    task = await rig.services.tasks.get(1)
    assert (task.status, task.version) == ("done", 2)


async def test_block_asks_the_reason_in_a_form_then_applies_it(rig: Rig) -> None:
    await add(rig, "Mesh")
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    [shown] = await rig.driver.invoke("task show", user=operator, options={"id": "T-1"})

    [opened] = await rig.click("Block", user=operator)
    assert opened.type == 9 and opened.payload is not None  # a modal
    assert opened.payload["data"]["title"] == "Block T-1"
    message_id = max(rig.bot._connection._view_store._views)
    [submitted] = await rig.submit("waiting for the NX licence", user=operator, message_id=message_id)

    assert submitted.type == 7 and "blocked\nwaiting for the NX licence" in submitted.text
    task = await rig.services.tasks.get(1)
    assert (task.status, task.blocked_reason) == ("blocked", "waiting for the NX licence")
    assert shown.ephemeral


async def test_a_block_form_submitted_after_someone_else_changed_the_task_is_a_conflict(rig: Rig) -> None:
    await add(rig, "Mesh")
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    await rig.driver.invoke("task show", user=operator, options={"id": "T-1"})
    await rig.click("Block", user=operator)
    await rig.services.tasks.done(OPERATOR, 1)

    [conflict] = await rig.submit("licence", user=operator, message_id=max(rig.bot._connection._view_store._views))

    assert conflict.ephemeral and "T-1 changed since you read it" in (conflict.content or "")
    assert (await rig.services.tasks.get(1)).status == "done"


async def test_a_click_by_someone_below_operator_is_refused_before_anything_happens(rig: Rig) -> None:
    await add(rig, "Mesh")
    await rig.driver.invoke("task show", user=rig.member(AccessLevel.OPERATOR), options={"id": "T-1"})
    viewer = rig.member(AccessLevel.VIEWER, "Vera")  # e.g. whose operator role was taken away meanwhile

    [done] = await rig.click("Done", user=viewer)
    [block] = await rig.click("Block", user=viewer)

    for refused in (done, block):
        assert refused.type == 4 and refused.ephemeral and "You need the operator level" in (refused.content or "")
    assert (await rig.services.tasks.get(1)).version == 1


# --- /task list ---------------------------------------------------------------------------------


async def test_list_shows_open_tasks_most_urgent_first_in_pages(rig: Rig) -> None:
    for number in range(1, 13):
        await add(rig, f"Job {number}", priority="urgent" if number == 7 else "normal")
    await rig.services.tasks.done(OPERATOR, 12)
    viewer = rig.member(AccessLevel.VIEWER, "Vera")

    first = single_message(await rig.driver.invoke("task list", user=viewer))

    assert first.ephemeral and first.allowed_mentions == NO_MENTIONS
    [page] = first.embeds
    assert [f.name.split()[1] for f in page.fields] == ["T-7", *(f"T-{n}" for n in range(1, 7)), "T-8", "T-9", "T-10"]
    assert page.footer.text == "Page 1/2"
    [turned] = await rig.click("Next", user=viewer)
    assert [f.name.split()[1] for f in turned.embeds[0].fields] == ["T-11"]  # T-12 is done: not open

    everything = single_message(await rig.driver.invoke("task list", user=viewer, options={"status": "all"}))
    assert everything.embeds[0].footer.text == "Page 1/2"
    done = single_message(await rig.driver.invoke("task list", user=viewer, options={"status": "done"}))
    assert [f.name.split()[1] for f in done.embeds[0].fields] == ["T-12"] and not done.message.get("components")


async def test_list_filters_by_assignee_and_mine(rig: Rig) -> None:
    antoine = rig.member(AccessLevel.VIEWER, "antoine")
    await add(rig, "Mesh", assignee="nx-expert")
    await add(rig, "Search", assignee="webster")
    await add(rig, "Sign off", assignee=f"user:{antoine.id}")

    def ids(call: RecordedCall) -> list[str]:
        return [(f.name or "").split()[1] for f in call.embeds[0].fields]

    by_agent = single_message(await rig.driver.invoke("task list", user=antoine, options={"assignee": "webster"}))
    mine = single_message(await rig.driver.invoke("task list", user=antoine, options={"mine": True}))
    nothing = single_message(await rig.driver.invoke("task list", user=antoine, options={"status": "blocked"}))

    assert ids(by_agent) == ["T-2"] and ids(mine) == ["T-3"]
    assert "yours" in (mine.embeds[0].description or "")
    assert ids(nothing) == [] and nothing.embeds[0].description == "Filtered: status blocked\nNo tasks match."


# --- autocomplete -------------------------------------------------------------------------------


async def test_task_ids_autocomplete_with_their_titles(rig: Rig) -> None:
    for title in ("Mesh the M2 mirror", "Review thermal analysis", "Mesh the M1 mirror"):
        await add(rig, title)
    await rig.services.tasks.done(OPERATOR, 1)
    user = rig.member(AccessLevel.OPERATOR)

    [by_words] = await rig.driver.autocomplete("task done", "id", "mesh", user=user)
    [by_id] = await rig.driver.autocomplete("task show", "id", "T-2", user=user)
    [anything] = await rig.driver.autocomplete("task move", "id", "T-", user=user, options={"status": "done"})

    assert by_words.type == 8
    assert by_words.choices == [
        {"name": "T-3 · Mesh the M1 mirror", "value": "T-3"},
        {"name": "T-1 · Mesh the M2 mirror", "value": "T-1"},  # done: after the open ones
    ]
    assert [c["value"] for c in by_id.choices] == ["T-2"]
    assert [c["value"] for c in anything.choices] == ["T-3", "T-2", "T-1"]


async def test_assignees_autocomplete_agents_then_members(rig: Rig) -> None:
    make_member(rig.bot, "websterfan")
    rig.agent(WEBSTER, "webster")  # an agent's bot account is offered as the agent, not as a member
    user = rig.member(AccessLevel.OPERATOR, "antoine")

    [typed] = await rig.driver.autocomplete("task add", "assignee", "web", user=user, options={"title": "x"})
    [everyone] = await rig.driver.autocomplete("task assign", "assignee", "", user=user, options={"id": "T-1"})

    assert typed.choices[0] == {"name": "webster (agent)", "value": "webster"}
    [fan] = typed.choices[1:]
    assert fan["name"] == "@websterfan" and fan["value"].startswith("user:")
    names = [c["name"] for c in everyone.choices]
    assert names[:8] == [f"{a} (agent)" for a in rig.services.config.agent_names]
    assert "@antoine" in names and len(names) <= 25


# --- people as assignees: the bot caches no members (no members intent); Discord is asked ---------


def person_inputs(olga: discord.Member) -> list[str]:
    """Every way a person may be written as an assignee."""
    return ["@olga", "olga", "OLGA", f"<@{olga.id}>", f"<@!{olga.id}>", f"user:{olga.id}", "@Olgi"]


async def test_a_person_not_cached_is_a_tasks_assignee_however_written(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    olga = make_member(rig.bot, "olga", nick="Olgi")
    assert guild_of(rig.bot).get_member(olga.id) is None  # as in production: nobody caches her

    for number, written in enumerate(person_inputs(olga), start=1):
        added = single_message(
            await rig.driver.invoke("task add", user=operator, options={"title": f"t{number}", "assignee": written})
        )
        task = await rig.services.tasks.get(number)
        assert (task.assignee_kind, task.assignee, task.assignee_text) == ("user", str(olga.id), "@olga"), written
        assert not added.ephemeral and "@olga" in (added.content or ""), written


async def test_a_task_is_assigned_to_a_person_not_cached_however_written(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    olga = make_member(rig.bot, "olga", nick="Olgi")
    await add(rig, "Mesh the M2 mirror", assignee="nx-expert")

    for written in person_inputs(olga):
        # Forget what the last form taught the directory: each form must find her on its own.
        rig.services.tasks.directory = rig.cog._fallback
        await rig.services.tasks.assign(OPERATOR, 1, "nx-expert")
        answer = single_message(
            await rig.driver.invoke("task assign", user=operator, options={"id": "T-1", "assignee": written})
        )
        assert "**T-1** assigned to @olga by Antoine" in (answer.content or ""), written
        task = await rig.services.tasks.get(1)
        assert (task.assignee_kind, task.assignee) == ("user", str(olga.id)), written


async def test_names_are_asked_of_the_gateway_and_ids_over_rest(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    olga = make_member(rig.bot, "olga")
    vera = make_member(rig.bot, "vera")
    members = FakeMembers.of(rig.bot._connection)

    await rig.driver.invoke("task add", user=operator, options={"title": "a", "assignee": "@olga"})
    await rig.driver.invoke("task add", user=operator, options={"title": "b", "assignee": f"<@{vera.id}>"})
    await rig.driver.invoke("task add", user=operator, options={"title": "c", "assignee": "olga"})  # known now

    assert members.queries == ["olga"] and members.fetched == [vera.id]
    assert [t.assignee for t in await rig.services.tasks.list(limit=10)] == [str(olga.id), str(vera.id), str(olga.id)]


async def test_an_unknown_person_is_refused_saying_what_works(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    make_member(rig.bot, "olga")

    by_name, by_id, nobody = [
        single_message(await rig.driver.invoke("task add", user=operator, options={"title": "x", "assignee": text}))
        for text in ("@olg", "<@100000000000000999>", "zed")
    ]

    assert all(answer.ephemeral for answer in (by_name, by_id, nobody))
    assert "'@olg' names no agent and no member of this server (did you mean @olga?)" in (by_name.content or "")
    assert "'<@100000000000000999>' is not a member of this server" in (by_id.content or "")
    for answer in (by_name, by_id, nobody):
        assert "An assignee is an agent (manager, " in (answer.content or "")
        assert "pick one from the suggestions, or write their username (@name), a mention (<@id>) or user:<id>" in (
            answer.content or ""
        )
    assert await rig.services.tasks.count() == 0


async def test_the_assignee_autocomplete_offers_a_person_discord_finds(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "antoine")
    olga = make_member(rig.bot, "olga", global_name="Olga Petrova")
    make_member(rig.bot, "vera")

    [typed] = await rig.driver.autocomplete("task assign", "assignee", "@Ol", user=operator, options={"id": "T-1"})

    assert typed.type == 8
    assert typed.choices == [{"name": "@Olga Petrova (olga)", "value": f"user:{olga.id}"}]
    assert [query.casefold() for query in FakeMembers.of(rig.bot._connection).queries] == ["ol"]


async def test_an_operators_post_assigns_a_task_to_a_person_not_cached(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    olga = make_member(rig.bot, "olga")
    await add(rig, "Mesh the M2 mirror")

    await rig.post("T-1 assign @olga", operator)

    task = await rig.services.tasks.get(1)
    assert (task.assignee_kind, task.assignee, task.assignee_text) == ("user", str(olga.id), "@olga")


async def test_the_harness_caches_members_as_production_does(rig: Rig) -> None:
    make_member(rig.bot, "olga")

    assert rig.bot.intents.value == bot_intents().value
    assert rig.bot._connection.member_cache_flags.value == discord.MemberCacheFlags.from_intents(bot_intents()).value
    assert list(guild_of(rig.bot).members) == [guild_of(rig.bot).me]  # only the bot itself, as GUILD_CREATE gives it


# --- agents' posts in #task-board ---------------------------------------------------------------


async def test_an_agents_post_is_applied_for_that_agent_and_acknowledged_with_a_reaction(rig: Rig) -> None:
    await add(rig, "Mesh the M2 mirror", assignee="nx-expert")

    posted = await rig.post("T-1 done: meshed", rig.agent())

    task = await rig.services.tasks.get(1)
    assert task.status == "done"
    last = (await rig.services.tasks.show(1)).history[-1]
    assert (last.actor_kind, last.actor, last.front_end, last.note) == ("agent", "nx-expert", "task-board", "meshed")
    assert rig.my_reactions(posted) == [ACK]
    assert rig.replies_to(posted) == []  # the reaction says it all


async def test_an_agents_new_task_is_acknowledged_with_its_id(rig: Rig) -> None:
    posted = await rig.post("new task: Review thermal analysis @auditor !high", rig.agent())

    task = await rig.services.tasks.get(1)
    assert (task.title, task.assignee, task.priority, task.creator) == (
        "Review thermal analysis",
        "auditor",
        "high",
        "nx-expert",
    )
    assert rig.my_reactions(posted) == [ACK]
    [reply] = rig.replies_to(posted)
    assert reply.content == "T-1 created: Review thermal analysis (auditor)"


async def test_an_agents_post_that_cannot_be_read_gets_a_one_line_hint(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")
    agent = rig.agent()

    unreadable = await rig.post("T-1 is looking good I think", agent)
    chatter = await rig.post("the report for T-1, as asked", agent)
    talk = await rig.post("Here is the thermal report you asked for.", agent)
    no_reason = await rig.post("T-1 blocked", agent)

    [hint] = rig.replies_to(unreadable)
    assert hint.content.startswith("I couldn't tell what to do with T-1.") and "\n" not in hint.content
    assert hint.payload["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert hint.payload["message_reference"]["fail_if_not_exists"] is False
    assert [r.content for r in rig.replies_to(chatter)] == [HINT]
    assert rig.replies_to(talk) == []  # an answer delivered to this channel is not a board update
    assert [r.content for r in rig.replies_to(no_reason)] == ["Say why T-1 is blocked: `T-1 blocked: <reason>`."]
    assert rig.my_reactions(unreadable) == [] and (await rig.services.tasks.get(1)).version == 1


async def test_an_agents_refused_post_is_answered_with_the_reason(rig: Rig) -> None:
    await add(rig, "Search", assignee="webster")

    posted = await rig.post("T-1 done", rig.agent())

    [refusal] = rig.replies_to(posted)
    assert "nx-expert may change only tasks assigned to it; T-1 is assigned to webster" in refusal.content
    assert (await rig.services.tasks.get(1)).status == "todo" and rig.my_reactions(posted) == []


async def test_a_person_below_operator_using_the_grammar_is_left_alone(rig: Rig) -> None:
    await add(rig, "Mesh")

    for member in (rig.member(AccessLevel.VIEWER, "vera"), make_member(rig.bot, "newcomer")):
        posted = await rig.post("T-1 done: finished", member)
        assert rig.replies_to(posted) == [] and rig.my_reactions(posted) == []
    assert (await rig.services.tasks.get(1)).status == "todo"


async def test_an_operators_grammar_post_is_applied_and_their_talk_left_alone(rig: Rig) -> None:
    await add(rig, "Mesh")
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")

    applied = await rig.post("**T-1** in progress", operator)
    talk = await rig.post("nice work everyone", operator)
    about = await rig.post("T-1 looks great", operator)  # mentions a task, but is no command

    assert rig.my_reactions(applied) == [ACK]
    last = (await rig.services.tasks.show(1)).history[-1]
    assert (last.actor_kind, last.actor, last.front_end, last.new_value) == (
        "person",
        "Antoine",
        "task-board",
        "in_progress",
    )
    for message_id in (talk, about):
        assert rig.replies_to(message_id) == [] and rig.my_reactions(message_id) == []


async def test_posts_elsewhere_and_our_own_are_ignored(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")
    me = guild_of(rig.bot).me

    elsewhere = await rig.post("T-1 done", rig.agent(), channel=rig.general)
    own = await rig.post("T-1 done", me)
    some_bot = give_level(make_member(rig.bot, "bot", is_bot=True), AccessLevel.ADMIN, rig.services.config)
    other_bot = await rig.post("T-1 done", some_bot)  # a bot with an admin role is still no person

    assert (await rig.services.tasks.get(1)).status == "todo"
    for message_id in (elsewhere, own, other_bot):
        assert rig.replies_to(message_id) == []
    assert rig.my_reactions(own) == [] and rig.my_reactions(other_bot) == []


async def test_when_the_reaction_is_refused_the_acknowledgement_is_written(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add(rig, "Mesh", assignee="nx-expert")

    async def forbidden(self: discord.Message, emoji: str) -> None:
        raise discord.Forbidden(dpytest.backend.FakeRequest(403, "Forbidden"), "Missing Permissions")

    monkeypatch.setattr(discord.Message, "add_reaction", forbidden)
    posted = await rig.post("T-1 done", rig.agent())

    assert [r.content for r in rig.replies_to(posted)] == [f"{ACK} T-1 → done"]


# --- the live board -----------------------------------------------------------------------------


async def test_the_board_is_posted_once_then_edited_in_place(rig: Rig) -> None:
    await add(rig, "Mesh the M2 mirror", assignee="nx-expert")
    await rig.settle()
    [board] = rig.boards()
    assert "T-1" in board_text(board) and "1 open: 1 todo" in board_text(board)
    assert rig.cog.live is not None and rig.cog.live.channel_id == str(TASK_BOARD)

    await rig.post("T-1 in progress", rig.agent())
    await rig.driver.invoke("task add", user=rig.member(AccessLevel.OPERATOR), options={"title": "Second"})
    await rig.settle()

    [edited] = rig.boards()
    assert edited["id"] == board["id"]
    text = board_text(edited)
    assert "2 open: 1 todo, 1 in progress" in text and "Second" in text
    assert [message_id for message_id, _ in rig.edits] == [int(board["id"])]  # one edit for both changes


async def test_a_burst_gives_at_most_one_edit_per_interval_and_ends_on_the_last_state(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")
    await rig.settle()
    agent = rig.agent()

    for status in ("in progress", "review", "in progress", "review", "blocked: licence", "in progress"):
        await rig.post(f"T-1 {status}", agent)
    await rig.settle()
    for number in range(5):
        await add(rig, f"More {number}")
    await rig.settle()

    times = [at for _, at in rig.edits]
    assert len(times) == 2  # one per burst (the clock stood still during each), not one per change (11)
    assert all(b - a >= INTERVAL for a, b in pairwise(times))
    [board] = rig.boards()
    text = board_text(board)
    assert "6 open: 5 todo, 1 in progress" in text and "More 4" in text


async def test_a_deleted_board_is_posted_again(rig: Rig) -> None:
    await add(rig, "Mesh")
    await rig.settle()
    [board] = rig.boards()

    await rig.board_channel.get_partial_message(int(board["id"])).delete()
    await dpytest.run_all_events()
    await rig.settle()

    [again] = rig.boards()
    assert again["id"] != board["id"] and "T-1" in board_text(again)


async def test_past_25_tasks_the_board_splits_over_messages_and_joins_again(rig: Rig) -> None:
    for number in range(1, 31):
        await add(rig, f"Job {number}")
    await rig.settle()

    first, second = rig.boards()
    assert discord.Embed.from_dict(first["embeds"][0]).title == "Task board (1/2)"
    assert len(first["embeds"][0]["fields"]) == 25 and len(second["embeds"][0]["fields"]) == 5
    for data in (first, second):
        assert len(discord.Embed.from_dict(data["embeds"][0])) <= 6000

    for number in range(1, 11):
        await rig.services.tasks.done(OPERATOR, number)
    await rig.settle()

    [joined] = rig.boards()
    assert joined["id"] == first["id"] and "20 open" in board_text(joined)


async def test_changes_from_any_front_end_redraw_the_board(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")
    await rig.settle()

    await rig.services.tasks.move(api_requester("nx-expert", rig.services.config), 1, "review")  # as the API does
    await rig.settle()

    [board] = rig.boards()
    assert "1 open: 1 review" in board_text(board)


async def test_after_a_restart_the_board_is_found_again_and_drawn_at_load(rig: Rig) -> None:
    await add(rig, "Mesh")
    await rig.settle()
    [board] = rig.boards()
    old_cog = rig.cog
    await rig.bot.remove_cog("Tasks")
    assert old_cog._task_changed not in rig.services.tasks._listeners  # unloading took the listener away
    await add(rig, "Changed while the bot was away")

    rig.bot.background_tasks = True  # as in production: the cog draws once when connected
    rig.bot._ready.set()  # type: ignore[union-attr]
    await rig.bot.add_cog(type(old_cog)(rig.bot, sleep=rig.clock.sleep, monotonic=rig.clock.monotonic))
    assert rig.cog.startup is not None
    await rig.cog.startup
    await rig.settle()

    [found] = rig.boards()  # edited by id, not posted again
    assert found["id"] == board["id"] and "Changed while the bot was away" in board_text(found)


async def test_changes_made_by_another_process_reach_the_board(rig: Rig) -> None:
    await add(rig, "Mesh")
    rig.bot.background_tasks = True  # as in production: drawn when connected, then following the database
    rig.bot._ready.set()  # type: ignore[union-attr]
    await rig.bot.remove_cog("Tasks")
    await rig.bot.add_cog(Tasks(rig.bot, sleep=rig.clock.sleep, monotonic=rig.clock.monotonic))
    assert rig.cog.startup is not None
    await rig.cog.startup
    await rig.settle()
    assert rig.cog.follower is not None and not rig.cog.follower.done()

    # `atomizer-hq task add` in a shell: its own process, its own TaskBoard, nobody here is told.
    other_process = TaskBoard(rig.services.config, rig.services.store)
    await other_process.add(OPERATOR, "Added from the CLI")
    await rig.settle()
    assert "Added from the CLI" not in board_text(rig.boards()[0])

    latest = await other_process.last_change()
    await rig.clock.advance(OTHER_PROCESSES_EVERY_S)  # the follower looks again
    await wait_for(lambda: rig.cog._seen_change == latest, what="the follower to see the other process's change")
    await rig.settle()
    [board] = rig.boards()
    assert "Added from the CLI" in board_text(board)
    assert await rig.cog.check_other_processes() is False  # nothing new since: no redraw asked

    follower = rig.cog.follower
    await rig.bot.remove_cog("Tasks")
    assert follower.cancelled()  # unloading stops it
    rig.bot.background_tasks = False
    await rig.bot.add_cog(Tasks(rig.bot, sleep=rig.clock.sleep, monotonic=rig.clock.monotonic))  # for teardown


async def test_without_the_board_channel_nothing_is_drawn_and_nothing_fails(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rig.bot, "get_channel", lambda channel_id: None)

    await add(rig, "Mesh")

    assert rig.cog.request_redraw() is False and rig.boards() == []


# --- registration and wiring --------------------------------------------------------------------


async def test_the_task_group_is_registered_with_its_levels_and_options(rig: Rig) -> None:
    group = rig.bot.tree.get_command("task")
    assert isinstance(group, app_commands.Group)
    assert sorted(c.name for c in group.commands) == ["add", "assign", "block", "done", "list", "move", "show"]
    options = {
        o["name"]: o for o in cast(app_commands.Command, group.get_command("add")).to_dict(rig.bot.tree)["options"]
    }
    assert list(options) == ["title", "assignee", "priority", "due", "description"]
    assert options["title"]["required"] and options["title"]["max_length"] == 200
    assert options["assignee"]["autocomplete"] and [c["value"] for c in options["priority"]["choices"]] == [
        "low",
        "normal",
        "high",
        "urgent",
    ]
    move = cast(app_commands.Command, group.get_command("move")).to_dict(rig.bot.tree)
    assert [o["name"] for o in move["options"]] == ["id", "status", "note"] and move["options"][0]["autocomplete"]


async def test_unloading_the_cog_gives_the_core_its_own_directory_back(rig: Rig) -> None:
    await rig.driver.invoke("task list", user=rig.member(AccessLevel.VIEWER))
    assert isinstance(rig.services.tasks.directory, DiscordGuildDirectory)

    await rig.bot.remove_cog("Tasks")

    assert not isinstance(rig.services.tasks.directory, DiscordGuildDirectory)
    await rig.bot.add_cog(Tasks(rig.bot, sleep=rig.clock.sleep, monotonic=rig.clock.monotonic))


# --- mentions and no-ops, as agents and people meet them -----------------------------------------


async def test_a_mention_of_an_agents_account_means_that_agent_and_of_a_person_that_person(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    vera = make_member(rig.bot, "vera")
    rig.agent()  # nx-expert's account is in the guild: the message carries it in its mentions

    for_agent = await rig.post(f"new task: Review the mesh <@{NX_EXPERT}>", rig.agent(WEBSTER, "webster"))
    for_person = await rig.post(f"new task: Sign off the budget <@!{vera.id}> !high", operator)
    await add(rig, "Tune the optimizer")
    assigned = await rig.post(f"T-3 assign <@{NX_EXPERT}>", operator)
    mentions = await rig.post("new task: Ask <@&100000000000000202> about <#100000000000000102>", operator)

    first, second, third, fourth = [await rig.services.tasks.get(n) for n in (1, 2, 3, 4)]
    assert (first.title, first.assignee_kind, first.assignee, first.creator) == (
        "Review the mesh",
        "agent",
        "nx-expert",
        "webster",
    )
    assert (second.title, second.assignee_kind, second.assignee, second.priority) == (
        "Sign off the budget",
        "user",
        str(vera.id),
        "high",
    )
    assert (third.assignee_kind, third.assignee) == ("agent", "nx-expert")
    assert (fourth.title, fourth.assignee) == ("Ask <@&100000000000000202> about <#100000000000000102>", None)
    for message_id in (for_agent, for_person, assigned, mentions):
        assert rig.my_reactions(message_id) == [ACK]
    assert [r.content for r in rig.replies_to(for_agent)] == ["T-1 created: Review the mesh (nx-expert)"]
    assert rig.replies_to(assigned) == []


async def test_verb_first_unblocked_and_several_updates_in_one_post_are_applied(rig: Rig) -> None:
    for title in ("Mesh", "Tune", "Check"):
        await add(rig, title, assignee="nx-expert")
    agent = rig.agent()
    await rig.post("T-3 blocked\u200b: waiting on the licence", agent)

    posted = await rig.post(
        "**Status update**\n✅ Finished T-1: meshed\nStarting T-2 now\nT-3 unblocked: licence arrived", agent
    )

    tasks = [await rig.services.tasks.get(n) for n in (1, 2, 3)]
    assert [t.status for t in tasks] == ["done", "in_progress", "in_progress"]
    assert rig.my_reactions(posted) == [ACK] and rig.replies_to(posted) == []
    notes = [e.note for e in (await rig.services.tasks.show(3)).history[1:]]
    assert notes == ["waiting on the licence", "licence arrived"]


async def test_a_long_note_is_cut_saying_so_and_applied(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")

    posted = await rig.post("T-1 done: " + "x" * 1990, rig.agent())

    [event] = (await rig.services.tasks.show(1)).history[1:]
    assert event.note is not None and len(event.note) <= 500 and event.note.endswith("more characters)")
    assert (await rig.services.tasks.get(1)).status == "done" and rig.my_reactions(posted) == [ACK]


async def test_a_repeated_update_says_already_and_records_nothing(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")
    agent = rig.agent()
    first = await rig.post("T-1 done: meshed", agent)
    again = await rig.post("T-1 done", agent)
    same_owner = await rig.post("T-1 assign @nx-expert", agent)

    assert rig.my_reactions(first) == [ACK]
    assert [r.content for r in rig.replies_to(again)] == ["T-1 is already done; nothing changed."]
    assert [r.content for r in rig.replies_to(same_owner)] == ["T-1 is already assigned to nx-expert; nothing changed."]
    assert rig.my_reactions(again) == [] and rig.my_reactions(same_owner) == []
    detail = await rig.services.tasks.show(1)
    assert (detail.task.version, len(detail.history)) == (2, 2)


async def test_a_slash_command_that_changes_nothing_says_so_privately(rig: Rig) -> None:
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    await add(rig, "Mesh", assignee="nx-expert")
    await rig.driver.invoke("task done", user=operator, options={"id": "T-1"})

    done = single_message(await rig.driver.invoke("task done", user=operator, options={"id": "T-1", "note": "x"}))
    moved = single_message(await rig.driver.invoke("task move", user=operator, options={"id": "T-1", "status": "done"}))
    assigned = single_message(
        await rig.driver.invoke("task assign", user=operator, options={"id": "T-1", "assignee": "nx-expert"})
    )

    assert done.ephemeral and done.content == "T-1 is already done; nothing changed."
    assert moved.ephemeral and moved.content == "T-1 is already done; nothing changed."
    assert assigned.ephemeral and assigned.content == "T-1 is already assigned to nx-expert; nothing changed."
    detail = await rig.services.tasks.show(1)
    assert (detail.task.version, len(detail.history)) == (2, 2)


async def test_a_button_for_what_already_happened_shows_it_without_recording(rig: Rig) -> None:
    await add(rig, "Mesh", assignee="nx-expert")
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    await rig.driver.invoke("task show", user=operator, options={"id": "T-1"})  # shows version 1, todo
    await rig.post("Starting T-1", rig.agent())  # meanwhile: in progress, version 2

    [clicked] = await rig.click("Start", user=operator)

    assert clicked.type == 7 and clicked.content == "T-1 is already in progress; nothing changed."
    assert {f.name: f.value for f in clicked.embeds[0].fields}["version"] == "2"
    assert buttons(clicked) == {"Start": True, "Done": False, "Block": False}
    assert len((await rig.services.tasks.show(1)).history) == 2
