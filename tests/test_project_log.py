"""The agents' project_log.md: one line per task event through the real TaskBoard, and never a broken board."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig
from bot.project_log import ProjectLog, log_line
from bot.services import open_services
from bot.settings import Settings
from bot.store import Store
from bot.taskboard import Task, TaskBoard, TaskEvent
from tests.clocks import FakeClock

ANTOINE = Requester(kind="person", name="antoine", front_end="discord", level=AccessLevel.ADMIN)
NX_EXPERT = Requester(kind="agent", name="nx-expert", front_end="task-board")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def board(tmp_path: Path, shipped_config: ClusterConfig, clock: FakeClock) -> AsyncIterator[TaskBoard]:
    async with Store(tmp_path / "atomizer.db") as store:
        yield TaskBoard(shipped_config, store, clock=clock)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


async def test_every_event_is_one_line_in_the_agents_format(
    board: TaskBoard, tmp_path: Path, clock: FakeClock, shipped_config: ClusterConfig
) -> None:
    path = tmp_path / "project_log.md"
    board.add_listener(ProjectLog(path))
    await board.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert")
    clock.advance(62 * 60)
    await board.move(NX_EXPERT, "T-1", "in_progress")
    await board.block(NX_EXPERT, "T-1", "waiting for the NX licence")
    await board.move(ANTOINE.acting_as("nx-expert", shipped_config), "T-1", "in_progress")
    await board.done(NX_EXPERT, "T-1", "meshed, 42k elements")
    await board.assign(ANTOINE, "T-1", "auditor", note="please review")
    assert lines(path) == [
        "2026-11-25 09:00 UTC · T-1 created by antoine (discord): Mesh the M2 mirror (assigned to nx-expert)",
        "2026-11-25 10:02 UTC · T-1 todo → in_progress by nx-expert (task-board)",
        "2026-11-25 10:02 UTC · T-1 in_progress → blocked by nx-expert (task-board): waiting for the NX licence",
        "2026-11-25 10:02 UTC · T-1 blocked → in_progress by nx-expert via antoine (discord)",
        "2026-11-25 10:02 UTC · T-1 in_progress → done by nx-expert (task-board): meshed, 42k elements",
        "2026-11-25 10:02 UTC · T-1 assigned to auditor by antoine (discord): please review",
    ]


async def test_lines_are_appended_to_what_the_agents_wrote(board: TaskBoard, tmp_path: Path) -> None:
    path = tmp_path / "project_log.md"
    path.write_text("# Project log\n\n- secretary: standup posted", encoding="utf-8")  # no final newline
    board.add_listener(ProjectLog(path))
    await board.add(ANTOINE, "Mesh the M2 mirror")
    await board.add(ANTOINE, "Review thermal analysis")
    assert lines(path) == [
        "# Project log",
        "",
        "- secretary: standup posted",
        "2026-11-25 09:00 UTC · T-1 created by antoine (discord): Mesh the M2 mirror",
        "2026-11-25 09:00 UTC · T-2 created by antoine (discord): Review thermal analysis",
    ]
    assert path.read_text(encoding="utf-8").endswith("\n")


async def test_concurrent_changes_give_one_whole_line_each(board: TaskBoard, tmp_path: Path) -> None:
    path = tmp_path / "project_log.md"
    board.add_listener(ProjectLog(path))
    for number in range(1, 21):
        await board.add(ANTOINE, f"Task {number}", assignee="nx-expert")
    await asyncio.gather(*(board.done(NX_EXPERT, n, f"finished number {n}") for n in range(1, 21)))
    written = lines(path)
    assert len(written) == 40
    done = sorted(line for line in written if "→ done" in line)
    assert done == sorted(
        f"2026-11-25 09:00 UTC · T-{n} todo → done by nx-expert (task-board): finished number {n}" for n in range(1, 21)
    )


@pytest.mark.parametrize(
    "where",
    [lambda tmp: tmp / "missing-dir" / "project_log.md", lambda tmp: tmp],
    ids=["missing-directory", "a-directory"],
)
async def test_an_unwritable_log_is_a_warning_and_the_board_goes_on(
    board: TaskBoard, tmp_path: Path, caplog: pytest.LogCaptureFixture, where: Callable[[Path], Path]
) -> None:
    heard: list[str] = []

    async def after(task: Task, event: TaskEvent) -> None:
        heard.append(event.describe())

    path = where(tmp_path)
    board.add_listener(ProjectLog(path))
    board.add_listener(after)  # a listener after the log still hears every change
    with caplog.at_level(logging.WARNING, logger="bot.project_log"):
        task = await board.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert")
        moved = await board.move(NX_EXPERT, task.id, "in_progress")
    assert (moved.status, moved.version) == ("in_progress", 2)
    assert [e.describe() for e in (await board.show(task.id)).history] == heard
    assert len(heard) == 2
    warnings = [r for r in caplog.records if r.name == "bot.project_log"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert f"project log {path}: could not append T-1" in warnings[0].getMessage()
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)  # handled here, not by the board's catch-all


def test_a_line_stays_one_line_whatever_the_names_hold() -> None:
    task = Task(1, "T", None, "done", "agent", "nx-expert", None, "normal", None, None, "person", "a", "", "", 2)
    event = TaskEvent(1, "2026-11-25T10:02:00+00:00", "person", "evil\nname", "api", "move", "todo", "done", "a\r\nb")
    assert log_line(task, event) == "2026-11-25 10:02 UTC · T-1 todo → done by evil name (api): a b\n"


async def test_services_wire_it_from_the_config(
    settings: Settings,
    make_config: Callable[..., ClusterConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "shared").mkdir()
    config = make_config(taskboard={"project_log": "~/shared/project_log.md"})
    async with open_services(settings, config) as services:
        await services.tasks.add(ANTOINE, "Mesh the M2 mirror")
    [line] = lines(tmp_path / "shared" / "project_log.md")
    assert line.endswith("· T-1 created by antoine (discord): Mesh the M2 mirror")
