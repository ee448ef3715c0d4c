"""Bad input: the target parser and the #task-board grammar under hypothesis, unicode and zero-width
characters in instructions and titles, and mention text that must never ping anyone.

Covered elsewhere: any text or near-target to `normalize` (tests/test_targets.py, 300 examples each),
the grammar's table of clean and sloppy messages (tests/test_taskboard.py), /delegate escaping
`@everyone`, a user mention and markdown in its echo (tests/test_cog_delegation.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig, load_cluster_config
from bot.delegation import DelegationService, chain_footer
from bot.errors import InvalidInput, InvalidTarget, PayloadTooLarge
from bot.services import Services
from bot.store import Store
from bot.targets import StaticDirectory, Target, TargetNormalizer
from bot.task_grammar import BoardCommand, NotUnderstood, apply_board_message, parse_board_message
from bot.taskboard import PRIORITIES, STATUSES, TaskBoard
from tests.conftest import SHIPPED_CONFIG, ServicesOnFleet
from tests.discord_harness import (
    Recorder,
    SlashDriver,
    give_level,
    guild_of,
    make_member,
    running_test_bot,
    single_message,
)
from tests.test_cog_delegation import Rig as DelegationRig
from tests.test_cog_tasks import NX_EXPERT, TASK_BOARD, FakeTime, patch_fake_discord
from tests.test_cog_tasks import Rig as TasksRig
from tests.test_targets import OUTPUT_RE

CONFIG: ClusterConfig = load_cluster_config(SHIPPED_CONFIG)
ROLE_IDS = {role for ids in CONFIG.roles.values() for role in ([ids] if isinstance(ids, str) else ids)}
NORMALIZER = TargetNormalizer(CONFIG, StaticDirectory.from_config(CONFIG))
OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)
NX = Requester(kind="agent", name="nx-expert", front_end="task-board")
INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u202a\u202b\u202c\u202d\u202e"
INVISIBLE_RE = re.compile(f"[{INVISIBLE}\u2028\u2029]")
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that make text look like Discord mentions, mass pings, ids and markup, glued with invisibles.
MENTIONS = [
    "@everyone", "@here", "＠everyone", "@\u200beveryone", "<@&100000000000000202>", "<@&100000000000000203>",
    "<@100000000000000301>", "<@!100000000000000307>", "<#100000000000000102>", "@nx-expert", "@auditor",
    "discord:role:100000000000000201", "role:100000000000000202", "user:100000000000000900", "#task-board",
]  # fmt: skip
PIECES = st.one_of(
    st.sampled_from(MENTIONS),
    st.sampled_from([*INVISIBLE, " ", "\n", "\t", "\u00a0", "\u3000"]),
    st.sampled_from(["<", ">", "@", "&", "!", "#", ":", "*", "`", "~", "|", "-", "—", "✅", "🔥"]),
    st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    st.text(max_size=8),
)
MENTION_TEXT = st.lists(PIECES, max_size=8).map("".join)


# --- the target parser ------------------------------------------------------------------------------


@EXAMPLES
@given(MENTION_TEXT)
def test_mention_text_never_becomes_a_role_or_a_mass_ping_target(text: str) -> None:
    try:
        target = NORMALIZER.normalize(text)
    except InvalidTarget as refused:
        assert str(refused) and len(str(refused)) < 600
        return
    assert isinstance(target, Target) and OUTPUT_RE.fullmatch(str(target)), target
    assert target.id not in ROLE_IDS  # a role is no delivery target, whatever its spelling


@pytest.mark.parametrize("text", ["@everyone", "@here", "<@&100000000000000202>", "discord:role:100000000000000202"])
def test_mass_pings_and_roles_are_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidTarget, match=r"role|everyone|here|prefix"):
        NORMALIZER.normalize(text)


# --- the #task-board grammar ------------------------------------------------------------------------

STATUS_WORDS = {
    "done": "done", "finished": "done", "completed": "done", "blocked": "blocked", "stuck": "blocked",
    "in progress": "in_progress", "started": "in_progress", "wip": "in_progress", "review": "review",
    "in review": "review", "todo": "todo", "reopen": "todo", "cancelled": "cancelled", "dropped": "cancelled",
}  # fmt: skip
# A note as agents write one (the grammar trims separators and a closing "." or "!", and drops markdown).
NOTE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ,;()'+/%#@&éàüß]{0,38}[A-Za-z0-9)]", fullmatch=True)


@EXAMPLES
@given(st.text(max_size=300))
def test_any_text_is_a_command_a_hint_or_nothing(text: str) -> None:
    parsed = parse_board_message(text)
    assert parsed is None or isinstance(parsed, BoardCommand | NotUnderstood)
    if isinstance(parsed, NotUnderstood):
        assert parsed.hint and "\n" not in parsed.hint
    if isinstance(parsed, BoardCommand):
        assert_well_formed(parsed)


@EXAMPLES
@given(MENTION_TEXT, st.sampled_from(["", "T-1 done: ", "new task: ", "T-2 assign ", "task: ", "T-3 blocked: "]))
def test_mention_text_in_any_position_parses_to_a_well_formed_command(text: str, lead: str) -> None:
    parsed = parse_board_message(lead + text)
    if isinstance(parsed, BoardCommand):
        assert_well_formed(parsed)


def assert_well_formed(command: BoardCommand) -> None:
    if command.action == "move":
        assert command.task_id is not None and 0 <= command.task_id < 10**9
        assert command.status in STATUSES
        assert command.note is None or (command.note == command.note.strip() and command.note)
    elif command.action == "assign":
        # A name, a mention as written (<@id> for a person or an agent's account; the core refuses roles and
        # channels by name), or None: unassigned.
        assert command.task_id is not None
        assert command.assignee is None or re.fullmatch(r"[\w.\-]+|<(?:@|@&|#)\d{1,25}>", command.assignee)
    else:
        assert command.title and command.title == command.title.strip(" -–—:") and "\n" not in command.title
        assert command.priority is None or command.priority in PRIORITIES


@EXAMPLES
@given(
    number=st.integers(1, 10**9 - 1),
    word=st.sampled_from(sorted(STATUS_WORDS)),
    note=st.one_of(st.none(), NOTE),
    case=st.sampled_from([str.lower, str.upper, str.title]),
    dressing=st.sampled_from([("", ""), ("**", "**"), ("`", "`"), ("✅ ", ""), ("- ", ""), ("• ", "")]),
    ref=st.sampled_from(["T-{n}", "t{n}", "T {n}", "T -{n}"]),
    sep=st.sampled_from([": ", " - ", " — ", " "]),
)
def test_every_spelling_of_a_move_reads_the_same(
    number: int, word: str, note: str | None, case: Any, dressing: tuple[str, str], ref: str, sep: str
) -> None:
    status = STATUS_WORDS[word]
    if status == "blocked" and note is None:
        note = "waiting for the licence"
    lead, close = dressing
    text = f"{lead}{ref.format(n=number)}{close} {case(word)}" + (f"{sep}{note}" if note else "")
    # Runs of spaces in a note are read as one (a post's layout is not its content).
    expected = " ".join(note.split()) if note else note
    assert parse_board_message(text) == BoardCommand("move", number, status, expected), text


# --- applying any post to a real board: never a crash, titles stored clean --------------------------


@pytest.fixture(scope="module")
def board_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, TaskBoard]]:
    """One task board on a real SQLite file, driven from synchronous hypothesis tests on a private loop."""
    loop = asyncio.new_event_loop()
    store = Store(Path(tmp_path_factory.mktemp("board")) / "atomizer.db")
    loop.run_until_complete(store.open())
    board = TaskBoard(CONFIG, store)
    loop.run_until_complete(board.add(OPERATOR, "Mesh the M2 mirror", assignee="nx-expert"))
    try:
        yield loop, board
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@EXAMPLES
@given(
    st.one_of(
        st.text(max_size=200),
        st.tuples(st.sampled_from(["new task: ", "T-1 ", "T-1 done: ", "task: ", "T-1 assign "]), MENTION_TEXT).map(
            "".join
        ),
    )
)
def test_any_post_by_an_agent_is_applied_or_answered_never_a_crash(
    board_loop: tuple[asyncio.AbstractEventLoop, TaskBoard], text: str
) -> None:
    loop, board = board_loop
    outcome = loop.run_until_complete(apply_board_message(board, NX, text))
    assert outcome.reply is None or (outcome.reply.strip() and isinstance(outcome.reply, str))
    if outcome.applied:
        task = loop.run_until_complete(board.get(outcome.task_id or 0))
        assert not INVISIBLE_RE.search(task.title) and "\n" not in task.title
        assert task.title == task.title.strip() and len(task.title) <= 200


async def test_titles_are_stored_without_invisible_characters_and_instructions_verbatim(
    services: Services,
) -> None:
    task = await services.tasks.add(OPERATOR, "\u200bMesh\u200d the\ufeff M2\u2060 mirror\u202e @everyone\u200b")
    assert task.title == "Mesh the M2 mirror @everyone"
    with pytest.raises(InvalidInput, match="the title is empty"):
        await services.tasks.add(OPERATOR, "\u200b\u200d \ufeff\u2060")
    # An instruction is what the agent reads: kept as written (only trimmed), mentions and all.
    service = DelegationService(services.config, services.store, services.gateway)
    result = await service.delegate(OPERATOR, "nx-expert", "  Mesh\u200b <@&100000000000000202> @here\n", dry_run=True)
    assert result.payload["message"] == "Mesh\u200b <@&100000000000000202> @here" + chain_footer("D-new")


@EXAMPLES
@given(st.text(alphabet=INVISIBLE + " \n\t\u00a0\u3000", max_size=20))
def test_an_instruction_of_nothing_visible_is_refused_as_empty(text: str) -> None:
    service = DelegationService(CONFIG, None, None)  # type: ignore[arg-type]  # a dry run touches neither
    with pytest.raises(InvalidInput, match="the instruction is empty"):
        asyncio.run(service.delegate(OPERATOR, "nx-expert", text, dry_run=True))


@EXAMPLES
@given(st.text(max_size=2000))
def test_any_instruction_is_sent_verbatim_or_refused_clearly(text: str) -> None:
    service = DelegationService(CONFIG, None, None)  # type: ignore[arg-type]
    try:
        result = asyncio.run(service.delegate(OPERATOR, "nx-expert", text, dry_run=True))
    except (InvalidInput, PayloadTooLarge) as refused:
        assert str(refused)
        return
    assert result.payload["message"] == text.strip() + chain_footer("D-new") and result.decision.allowed


# --- nothing the bot sends with user text pings anyone ----------------------------------------------


@pytest.fixture
async def tasks_rig(services: Services, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TasksRig]:
    """tests/test_cog_tasks.py's rig: channel sends, edits and interaction answers all recorded."""
    recorder = Recorder()
    recorder.install(monkeypatch)
    calls: list[Any] = recorder.calls
    async with running_test_bot(services) as bot:
        board_channel = dpytest.backend.make_text_channel("task-board", guild_of(bot), id_num=TASK_BOARD)
        clock = FakeTime()
        rig = TasksRig(bot, services, SlashDriver(bot), board_channel, clock, calls)
        patch_fake_discord(monkeypatch, bot, rig)
        cog_class = type(rig.cog)
        await bot.remove_cog("Tasks")
        await bot.add_cog(cog_class(bot, sleep=clock.sleep, monotonic=clock.monotonic))
        yield rig
        await rig.settle()


PINGS = "@everyone <@&100000000000000202> @here <@100000000000000301>"
SILENT = ({"parse": []}, {"parse": [], "replied_user": False})


async def test_mention_text_in_titles_and_posts_never_pings_anyone(tasks_rig: TasksRig) -> None:
    rig = tasks_rig
    operator = give_level(make_member(rig.bot, "antoine"), AccessLevel.OPERATOR, rig.services.config)  # role 202
    agent = make_member(rig.bot, "nx-expert", user_id=NX_EXPERT, is_bot=True)
    make_member(rig.bot, "manager", user_id=100000000000000301, is_bot=True)  # so dpytest can resolve <@…301>

    await rig.driver.invoke("task add", user=operator, options={"title": f"{PINGS} fix\u200b the mirror"})
    await rig.driver.invoke("task add", user=operator, options={"title": "\u200b\u200d"})  # refused: empty
    await rig.driver.invoke("task show", user=operator, options={"id": "T-1"})
    await rig.post(f"new task: {PINGS} check the CTE !high", agent)  # created by the agent: answered with its id
    await rig.post("new task: @everyone", agent)  # "everyone" is no assignee: refused with the reason
    await rig.post(f"T-1 done: {PINGS}", agent)  # not its task: refused with the reason
    await rig.post(f"T-2 {PINGS}", agent)  # unreadable: a hint
    await rig.services.tasks.add(OPERATOR, f"{PINGS} from the API")
    await rig.services.tasks.move(OPERATOR, 2, "in_progress", note=PINGS)
    await rig.settle()

    first = await rig.services.tasks.get(1)
    assert first.title == f"{PINGS} fix the mirror"  # stored clean of invisibles, mentions kept as text
    interaction_answers = [c for c in rig.driver.calls + rig.webhook_calls if c.content or c.embeds]
    channel_sends = [s.payload for s in rig.sent]
    edits = [m for m in rig.stored() if m.get("edited_timestamp") or "allowed_mentions" in m]
    assert len(interaction_answers) >= 3 and len(channel_sends) >= 4
    for call in interaction_answers:
        assert call.allowed_mentions in SILENT, call
    for payload in channel_sends:
        assert payload.get("allowed_mentions") in SILENT, payload
    for message in edits:
        assert message.get("allowed_mentions", {"parse": []}) in SILENT, message
    # and what was posted does carry the mention text (so the check above is not vacuous)
    assert any("@everyone" in (p.get("content") or "") or p.get("embeds") for p in channel_sends)


def test_the_bot_default_allows_no_mentions() -> None:
    """A send that forgets its own allowed_mentions falls back on the bot's: none (tests/test_discord_bot.py
    checks the bot states it; this is the wire form the checks above expect)."""
    assert discord.AllowedMentions.none().to_dict() in SILENT


@pytest.fixture
async def delegation_rig(services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """tests/test_cog_delegation.py's bot over a simulated fleet; background followups are recorded too."""
    recorder = Recorder()
    recorder.install(monkeypatch)
    services, fleet = await services_on_fleet()
    async with running_test_bot(services) as bot:
        yield DelegationRig(bot, services, fleet, SlashDriver(bot), recorder)


async def test_delegate_with_mentions_roles_and_invisibles_never_pings_anyone(delegation_rig: Any) -> None:
    rig = delegation_rig
    operator = rig.member(AccessLevel.OPERATOR)
    make_member(rig.bot, "manager", user_id=100000000000000301, is_bot=True)
    instruction = f"{PINGS} mesh\u200b the mirror"

    sent = await rig.delegate(operator, agent="nx-expert", instruction=instruction)
    empty = await rig.delegate(operator, agent="nx-expert", instruction="\u200b\u2060\ufeff")
    role = await rig.delegate(operator, agent="nx-expert", instruction="Mesh", target="<@&100000000000000202>")
    everyone = await rig.delegate(operator, agent="nx-expert", instruction="Mesh", target="@everyone")

    answers = [call for call in sent + empty + role + everyone + rig.recorder.calls if call.content or call.embeds]
    assert len(answers) >= 4
    for call in answers:
        assert call.allowed_mentions in SILENT, call
    assert "the instruction is empty" in single_message(empty).text and single_message(empty).ephemeral
    assert "role" in single_message(role).text and single_message(everyone).ephemeral
    [run] = rig.fleet.received("nx-expert")  # only the first went out, verbatim: the agent reads it as written
    assert run.body["message"] == instruction + chain_footer("D-1")
