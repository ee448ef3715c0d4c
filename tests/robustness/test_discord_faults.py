"""Discord faults: 429s and 5xx on board posts, board edits and alerts are retried later, and the boards
converge to the database.

discord.py retries a 429 or a 5xx a few times on its own; what reaches our code is the HTTPException
it raises when Discord keeps refusing. That is what is injected here, at the HTTP client's edit and
send calls. Already covered: an alert refused with a 429 is posted in a later round
(tests/test_cog_status.py), a deleted board is posted again (test_cog_status.py, test_cog_tasks.py).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest

from bot.authz import AccessLevel, Requester
from bot.boards import BoardContent
from bot.services import Services
from cogs.utils.boards import to_embed
from tests.conftest import ServicesOnFleet
from tests.discord_harness import Recorder, SlashDriver, guild_of, running_test_bot
from tests.test_cog_status import IT_OPS, Posted
from tests.test_cog_status import Rig as StatusRig
from tests.test_cog_tasks import TASK_BOARD, FakeTime, patch_fake_discord
from tests.test_cog_tasks import Rig as TasksRig

OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)
REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def refusal(status: int) -> discord.HTTPException:
    """What discord.py raises once it gives up on a request Discord keeps refusing."""
    response = dpytest.backend.FakeRequest(status, REASONS[status])
    kind = discord.DiscordServerError if status >= 500 else discord.HTTPException
    return kind(response, {"message": REASONS[status], "code": 0})


@dataclass
class Flaky:
    """The next answers Discord gives to edits and to sends (then it accepts again); what it refused."""

    edits: list[int] = field(default_factory=list)
    sends: list[int] = field(default_factory=list)
    nth_edit: dict[int, int] = field(default_factory=dict)  # refuse the n-th edit from now (1-based)
    refused: list[tuple[str, int]] = field(default_factory=list)
    _edit_calls: int = 0

    def check(self, what: str, queue: list[int]) -> None:
        status = queue.pop(0) if queue else None
        if what == "edit" and self.nth_edit:
            self._edit_calls += 1
            status = self.nth_edit.pop(self._edit_calls, status)
            if not self.nth_edit:
                self._edit_calls = 0
        if status is not None:
            self.refused.append((what, status))
            raise refusal(status)


def make_flaky(monkeypatch: pytest.MonkeyPatch, http: type, flaky: Flaky) -> None:
    """Wrap edit_message and send_message of the bot's HTTP client, as tests/test_cog_tasks.py fakes them."""
    edit, send = http.edit_message, http.send_message

    async def edit_message(self: Any, channel_id: int, message_id: int, **fields: Any) -> Any:
        flaky.check("edit", flaky.edits)
        return await edit(self, channel_id, message_id, **fields)

    async def send_message(self: Any, channel_id: int, *, params: Any) -> Any:
        flaky.check("send", flaky.sends)
        return await send(self, channel_id, params=params)

    monkeypatch.setattr(http, "edit_message", edit_message)
    monkeypatch.setattr(http, "send_message", send_message)


def shown(embeds: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """An embed as a reader sees it: title, description, fields, footer."""
    out = []
    for data in embeds:
        embed = discord.Embed.from_dict(data)
        fields = tuple((f.name, f.value) for f in embed.fields)
        out.append((embed.title, embed.description, fields, embed.footer.text))
    return out


def rendered(parts: list[BoardContent]) -> list[tuple[Any, ...]]:
    return shown([to_embed(part).to_dict() for part in parts])


# --- the task board -------------------------------------------------------------------------------


@pytest.fixture
async def tasks_rig(services: Services, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TasksRig, Flaky]]:
    """tests/test_cog_tasks.py's rig (fake clock for the coalescer), with Discord refusing on demand."""
    recorder = Recorder()
    recorder.install(monkeypatch)
    calls: list[Any] = recorder.calls
    flaky = Flaky()
    async with running_test_bot(services) as bot:
        board_channel = dpytest.backend.make_text_channel("task-board", guild_of(bot), id_num=TASK_BOARD)
        clock = FakeTime()
        rig = TasksRig(bot, services, SlashDriver(bot), board_channel, clock, calls)
        patch_fake_discord(monkeypatch, bot, rig)
        make_flaky(monkeypatch, type(bot.http), flaky)
        cog_class = type(rig.cog)
        await bot.remove_cog("Tasks")
        await bot.add_cog(cog_class(bot, sleep=clock.sleep, monotonic=clock.monotonic))
        yield rig, flaky
        await rig.settle()


async def assert_board_is_the_database(rig: TasksRig) -> None:
    assert [shown(m["embeds"])[0] for m in rig.boards()] == rendered(await rig.cog.render())


@pytest.mark.parametrize("statuses", [[429, 429], [503, 502], [429, 500]], ids=["429", "5xx", "mixed"])
async def test_the_task_board_converges_through_refused_posts_and_edits(
    tasks_rig: tuple[TasksRig, Flaky], statuses: list[int]
) -> None:
    rig, flaky = tasks_rig
    tasks = rig.services.tasks
    flaky.sends = list(statuses)  # the first draw is refused, then refused again
    await tasks.add(OPERATOR, "Mesh the M2 mirror", assignee="nx-expert")
    await rig.settle()
    [board] = rig.boards()  # posted once in the end, never twice
    await assert_board_is_the_database(rig)

    flaky.edits = list(statuses)
    await tasks.add(OPERATOR, "Check the CTE data", assignee="webster", priority="high")
    await tasks.move(OPERATOR, 1, "in_progress")
    await rig.settle()
    [edited] = rig.boards()
    assert edited["id"] == board["id"]
    await assert_board_is_the_database(rig)
    assert flaky.refused == [("send", s) for s in statuses] + [("edit", s) for s in statuses]
    # Each retry waited its turn: edits of one message stay at least the interval apart.
    times = [at for _, at in rig.edits]
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(times))


async def test_a_multi_part_board_refused_half_way_ends_whole(tasks_rig: tuple[TasksRig, Flaky]) -> None:
    """A board of several messages: part 1 edited, part 2 refused; the retry finishes the job, no part twice."""
    rig, flaky = tasks_rig
    for number in range(30):
        await rig.services.tasks.add(OPERATOR, f"Task {number}")
    await rig.settle()
    first = rig.boards()
    assert len(first) >= 2
    edits_before = len(rig.edits)
    flaky.nth_edit = {2: 429}  # the second edit of the next redraw
    for number in range(30):
        await rig.services.tasks.move(OPERATOR, number + 1, "in_progress")
    await rig.settle()
    assert [m["id"] for m in rig.boards()] == [m["id"] for m in first]
    await assert_board_is_the_database(rig)
    assert flaky.refused == [("edit", 429)]
    assert len(rig.edits) - edits_before == len(first)  # each part edited once: part 1 was not redone


# --- the status board and alerts in #it-ops ---------------------------------------------------------


@pytest.fixture
async def status_rig(
    services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[StatusRig, Flaky]]:
    services, fleet = await services_on_fleet()
    flaky = Flaky()
    async with running_test_bot(services) as bot:
        it_ops = dpytest.backend.make_text_channel("it-ops", guild_of(bot), id_num=IT_OPS)
        rig = StatusRig(bot, services, fleet, SlashDriver(bot), it_ops)
        http = type(bot.http)

        # dpytest edits only through a full Message found in its caller's locals; edit the stored copy by id.
        async def edit_message(self: Any, channel_id: int, message_id: int, **fields: Any) -> dict[str, Any]:
            flaky.check("edit", flaky.edits)
            stored = dpytest.backend._cur_config.messages.get(int(channel_id), [])
            [message] = [m for m in stored if int(m["id"]) == int(message_id)]
            message.update(fields["params"].payload)
            return message

        send = http.send_message

        async def send_message(self: Any, channel_id: int, *, params: Any) -> Any:
            flaky.check("send", flaky.sends)
            channel = bot.get_channel(int(channel_id))  # noqa: F841 - dpytest finds the channel in its caller's locals
            return await send(self, channel_id, params=params)

        monkeypatch.setattr(http, "edit_message", edit_message)
        monkeypatch.setattr(http, "send_message", send_message)
        yield rig, flaky


def alerts(rig: StatusRig) -> list[str]:
    return [m.content for m in rig.posted() if m.content]


def boards(rig: StatusRig) -> list[Posted]:
    return [m for m in rig.posted() if m.data.get("embeds")]


async def test_the_status_board_converges_and_alerts_go_out_while_discord_refuses_board_edits(
    status_rig: tuple[StatusRig, Flaky],
) -> None:
    rig, flaky = status_rig
    await rig.cog.monitor_round()
    [board] = boards(rig)
    await rig.fleet.take_down("webster")
    flaky.edits = [429, 503, 429, 502]  # Discord refuses every board edit for four rounds

    for _ in range(2):  # webster is confirmed down on the second failed probe
        await run_round(rig)
    # The alert does not wait for the board: it is what someone has to act on.
    assert [a for a in alerts(rig) if "webster is down" in a], alerts(rig)
    for _ in range(2):
        await run_round(rig)
    assert flaky.edits == []
    await run_round(rig)  # Discord accepts again: the board catches up
    [now] = boards(rig)
    assert now.id == board.id and "7 ready, 1 down" in now.text
    assert len([a for a in alerts(rig) if "webster is down" in a]) == 1


async def test_an_alert_refused_with_a_5xx_is_posted_once_in_a_later_round(status_rig: tuple[StatusRig, Flaky]) -> None:
    rig, flaky = status_rig
    await rig.cog.monitor_round()
    await rig.fleet.take_down("webster")
    await rig.cog.monitor_round()
    flaky.sends = [503, 500]
    await rig.cog.monitor_round()  # confirmed down: the alert is refused
    await rig.cog.monitor_round()  # and refused again
    assert alerts(rig) == [] and [s for _, s in flaky.refused] == [503, 500]
    [pending] = await rig.services.monitor.unposted_alerts()
    row = await rig.services.store.fetchone("SELECT attempts, last_error FROM alerts WHERE id = ?", (pending.id,))
    assert row is not None and row["attempts"] == 2 and "500" in row["last_error"]
    await rig.cog.monitor_round()
    assert alerts(rig) == [f"🔴 {pending.text}"]
    await rig.cog.monitor_round()
    assert len(alerts(rig)) == 1 and await rig.services.monitor.unposted_alerts() == []


async def run_round(rig: StatusRig) -> None:
    """One background round, as `_monitor_forever` runs it (a round that fails is logged; the next one runs)."""
    with contextlib.suppress(discord.HTTPException):
        await rig.cog.monitor_round()
