"""`atomizer-hq task …` through its real entry point, in a subprocess, as an operator runs it on the host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import load_cluster_config
from bot.store import Store
from bot.taskboard import TaskBoard
from tests.clocks import days_from_today
from tests.conftest import SHIPPED_CONFIG
from tests.test_cli import cli_env, run_cli

RECORD_KEYS = {
    "id", "title", "description", "status", "assignee", "priority", "due", "blocked_reason", "creator",
    "created_at", "updated_at", "version",
}  # fmt: skip
OPERATOR = Requester(kind="person", name="antoine", front_end="discord", level=AccessLevel.OPERATOR)


class Host:
    """The CLI against one database in tmp_path, and the core's own view of that database."""

    def __init__(self, tmp_path: Path, config: Path = SHIPPED_CONFIG) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.env = cli_env(tmp_path)

    async def run(self, *args: str) -> tuple[int, str, str]:
        return await run_cli("--config", str(self.config), "task", *args, env=self.env)

    async def json(self, *args: str) -> Any:
        code, out, err = await self.run(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    async def seed(self, title: str) -> None:
        """A task made straight through the core: set-up without a subprocess."""
        async with Store(self.tmp_path / "atomizer.db") as store:
            await TaskBoard(load_cluster_config(self.config), store).add(OPERATOR, title)

    async def record(self, task: str) -> dict[str, Any]:
        async with Store(self.tmp_path / "atomizer.db") as store:
            return (await TaskBoard(load_cluster_config(self.config), store).get(task)).to_dict()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


async def test_a_task_past_its_due_date_is_shown_overdue_and_one_due_today_is_not(host: Host) -> None:
    past, today = days_from_today(-1), days_from_today(0)
    assert (await host.run("add", "Late", "--due", past))[0] == 0
    assert (await host.run("add", "On time", "--due", today))[0] == 0
    code, out, err = await host.run("list")
    assert code == 0, err
    assert f"due {past} (overdue)" in out
    assert f"due {today} ·" in out and f"due {today} (overdue)" not in out


async def test_a_task_from_add_to_done(host: Host) -> None:
    due = days_from_today(30)
    code, out, err = await host.run(
        "add", "Mesh the M2 mirror", "--assignee", "nx-expert", "--priority", "high", "--due", due,
        "--description", "M2 mirror, 42k elements",
    )  # fmt: skip
    assert code == 0, err
    assert out == f"❗ T-1 ⬜ todo · nx-expert · due {due} · Mesh the M2 mirror\n"

    created = await host.json("add", "Review thermal analysis", "--assignee", "auditor")
    assert created == await host.record("T-2")
    assert set(created) == RECORD_KEYS
    assert created["creator"]["kind"] == "person" and created["creator"]["name"].endswith("@host")

    moved = await host.json("move", "T-1", "in_progress", "--note", "meshing", "--version", "1")
    assert (moved["status"], moved["version"]) == ("in_progress", 2)
    assert moved == await host.record("T-1")

    blocked = await host.json("block", "t1", "waiting for the NX licence")
    assert (blocked["status"], blocked["blocked_reason"]) == ("blocked", "waiting for the NX licence")

    assigned = await host.json("assign", "1", "optimizer", "--version", "3")
    assert assigned["assignee"] == {"kind": "agent", "id": "optimizer", "label": "optimizer"}

    code, out, err = await host.run("done", "T-1", "--note", "meshed, 42k elements")
    assert code == 0, err
    assert out.startswith("❗ T-1 ✅ done · optimizer")

    shown = await host.json("show", "T-1")
    history, delegations = shown.pop("history"), shown.pop("delegations")
    assert shown == await host.record("T-1")
    assert delegations == []
    assert [event["text"] for event in history][1:] == [
        f"T-1 todo → in_progress by {created['creator']['name']}: meshing (cli)",
        f"T-1 in_progress → blocked by {created['creator']['name']}: waiting for the NX licence (cli)",
        f"T-1 assigned to optimizer by {created['creator']['name']} (cli)",
        f"T-1 blocked → done by {created['creator']['name']}: meshed, 42k elements (cli)",
    ]

    code, out, err = await host.run("show", "T-1")
    assert code == 0, err
    assert out.startswith("┃ T-1 · Mesh the M2 mirror\n")
    assert "┃   description\n┃     M2 mirror, 42k elements\n" in out
    assert "┃   version          5\n" in out
    assert "T-1 blocked → done by" in out and "meshed, 42k elements (cli)" in out


async def test_list_shows_open_tasks_unless_asked(host: Host) -> None:
    for title, assignee in (("Mesh the M2 mirror", "nx-expert"), ("Tune", "optimizer"), ("Old", "nx-expert")):
        assert (await host.run("add", title, "--assignee", assignee))[0] == 0
    assert (await host.run("done", "T-3"))[0] == 0

    code, out, err = await host.run("list")
    assert code == 0, err
    assert out.splitlines() == [
        "T-1 ⬜ todo · nx-expert · Mesh the M2 mirror",
        "T-2 ⬜ todo · optimizer · Tune",
        "2 open tasks",
    ]
    listing = await host.json("list", "--all")
    assert listing["total"] == 3
    assert listing["tasks"] == [await host.record(f"T-{n}") for n in (1, 2, 3)]
    assert [t["id"] for t in (await host.json("list", "--assignee", "nx-expert", "--all"))["tasks"]] == ["T-1", "T-3"]
    assert [t["id"] for t in (await host.json("list", "--status", "done"))["tasks"]] == ["T-3"]
    code, out, _ = await host.run("list", "--all", "--limit", "1")
    assert out.splitlines()[-1] == "1 of 3 tasks"
    code, out, _ = await host.run("list", "--assignee", "webster")
    assert (code, out) == (0, "0 open tasks\n")


async def test_a_stale_version_is_refused_with_exit_1(host: Host) -> None:
    assert (await host.run("add", "Mesh the M2 mirror", "--assignee", "nx-expert"))[0] == 0
    assert (await host.run("move", "T-1", "in_progress"))[0] == 0  # someone else, after we read version 1
    for args in (("move", "T-1", "done", "--version", "1"), ("assign", "T-1", "auditor", "--version", "1")):
        code, out, err = await host.run(*args)
        assert (code, out) == (1, "")
        assert "T-1 changed since you read it (you had version 1, it is now 2: in_progress, nx-expert" in err
        assert "reload it and try again" in err
    record = await host.record("T-1")
    assert (record["status"], record["assignee"]["id"], record["version"]) == ("in_progress", "nx-expert", 2)


async def test_as_an_agent_the_agents_rules_apply(host: Host) -> None:
    created = await host.json("add", "Review thermal analysis", "--as", "manager", "--assignee", "auditor")
    assert created["creator"] == {"kind": "agent", "name": "manager"}
    moved = await host.json("move", "T-1", "in_progress", "--as", "auditor")
    assert moved["status"] == "in_progress"
    code, out, err = await host.run("done", "T-1", "--as", "nx-expert")
    assert (code, out) == (1, "")
    assert "nx-expert may change only tasks assigned to it; T-1 is assigned to auditor" in err
    [*_, event] = (await host.json("show", "T-1"))["history"]
    assert event["actor"].startswith("auditor via ") and event["actor"].endswith("@host")
    code, _, err = await host.run("done", "T-1", "--as", "nx-exprt")
    assert code == 2 and "nx-exprt" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "T-99"), "no task T-99"),
        (("move", "T-99", "done"), "no task T-99"),
        (("done", "X-1"), "not a task id"),
        (("move", "T-1", "frozen"), "unknown status 'frozen'"),
        (("move", "T-1", "blocked"), "say why the task is blocked"),
        (("block", "T-1", " "), "say why the task is blocked"),
        (("add", " "), "the title is empty"),
        (("add", "T", "--priority", "asap"), "unknown priority 'asap'"),
        (("add", "T", "--due", "next week"), "is not a due date"),
        (("add", "T", "--assignee", "#task-board"), "is a channel"),
        (("assign", "T-1", "@nobody-here"), "nobody-here"),
        (("list", "--limit", "0"), "--limit must be at least 1"),
        (("list", "--status", "frozen"), "unknown status 'frozen'"),
        (("move", "T-1", "done", "--version", "two"), "invalid int value"),
        (("move", "T-1"), "required: status"),
        (("frobnicate",), "invalid choice"),
    ],
)
async def test_bad_input_exits_2_and_says_what_is_wrong(host: Host, args: tuple[str, ...], message: str) -> None:
    await host.seed("Mesh the M2 mirror")
    code, out, err = await host.run(*args)
    assert (code, out) == (2, "")
    assert message in err
    assert (await host.record("T-1"))["version"] == 1


async def test_the_agents_project_log_hears_the_cli(tmp_path: Path) -> None:
    log = tmp_path / "project_log.md"
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    marker = '# project_log = "/home/atomizer/atomizer/workspaces/shared/project_log.md"'
    assert marker in text
    config = tmp_path / "cluster.toml"
    config.write_text(text.replace(marker, f"project_log = {json.dumps(str(log))}"), encoding="utf-8")
    host = Host(tmp_path, config)
    assert (await host.run("add", "Mesh the M2 mirror", "--assignee", "nx-expert"))[0] == 0
    assert (await host.run("done", "T-1", "--as", "nx-expert", "--note", "meshed, 42k elements"))[0] == 0
    first, second = log.read_text(encoding="utf-8").splitlines()
    assert "T-1 created by " in first and "(cli): Mesh the M2 mirror (assigned to nx-expert)" in first
    assert second.endswith("(cli): meshed, 42k elements")
    assert "· T-1 todo → done by nx-expert via " in second


async def test_done_twice_says_already_and_records_nothing(host: Host) -> None:
    await host.seed("Mesh the M2 mirror")
    assert (await host.run("done", "T-1", "--note", "meshed"))[0] == 0

    again = await host.run("done", "T-1", "--note", "meshed again", "--version", "2")
    moved = await host.run("move", "T-1", "done")
    assigned = [await host.run("assign", "T-1", "auditor") for _ in range(2)]

    assert again[:2] == (0, "T-1 is already done; nothing changed\n")
    assert moved[:2] == (0, "T-1 is already done; nothing changed\n")
    assert assigned[1][:2] == (0, "T-1 is already assigned to auditor; nothing changed\n")
    record = await host.record("T-1")
    assert record["version"] == 3  # the done and the first assignment
    assert (await host.json("move", "T-1", "review", "--version", "3"))["version"] == 4
