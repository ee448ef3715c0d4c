"""`atomizer-hq cluster …` through its real entry point, against the fake systemctl, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHIPPED_CONFIG
from tests.test_systemd import FakeSystemd

AGENTS = ["manager", "tech-lead", "secretary", "auditor", "optimizer", "study-builder", "nx-expert", "webster"]
COMMENTED_TABLE = '# [systemd]\n# systemctl = ["systemctl", "--user"]\n# journalctl = ["journalctl", "--user"]\n'


def unit(agent: str) -> str:
    return f"openclaw-atomizer@{agent}.service"


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystemd:
    return FakeSystemd(tmp_path / "systemd")


@pytest.fixture
def config_path(tmp_path: Path, fake: FakeSystemd) -> Path:
    """The shipped cluster file, its commented [systemd] table switched on and pointed at the fake."""
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    assert text.count(COMMENTED_TABLE) == 1
    table = f"[systemd]\nsystemctl = {json.dumps(fake.systemctl)}\njournalctl = {json.dumps(fake.journalctl)}\n"
    path = tmp_path / "cluster.toml"
    path.write_text(text.replace(COMMENTED_TABLE, table), encoding="utf-8")
    return path


@pytest.fixture
def cluster(tmp_path: Path, config_path: Path) -> Any:
    """Run `python -m bot --config <fake> cluster ARGS`; stdin is /dev/null unless a terminal is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIZER_") and k != "DISCORD_TOKEN"}
    env["ATOMIZER_DB"] = str(tmp_path / "atomizer.db")
    env_file = tmp_path / "empty.env"
    env_file.write_text("", encoding="utf-8")

    async def run(*args: str, stdin: int = asyncio.subprocess.DEVNULL) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config_path), "--env-file", str(env_file), "cluster", *args,
            env=env, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    return run


def actions(fake: FakeSystemd) -> list[tuple[str, str]]:
    """The start/stop/restart calls the fake received, without the is-active checks after each."""
    return [(call[1], call[2]) for call in fake.calls() if call[0] == "systemctl" and call[1] != "is-active"]


# --- start, stop, restart ---------------------------------------------------------------------


async def test_each_verb_on_one_agent(cluster: Any, fake: FakeSystemd) -> None:
    code, out, err = await cluster("start", "webster")
    assert code == 0, err
    assert out == "webster: started (active)\n"
    code, out, _ = await cluster("restart", "Webster")  # names are forgiving about case, as everywhere
    assert code == 0 and out == "webster: restarted (active)\n"
    code, out, _ = await cluster("stop", "webster")
    assert code == 0 and out == "webster: stopped (inactive)\n"
    assert actions(fake) == [("start", unit("webster")), ("restart", unit("webster")), ("stop", unit("webster"))]


async def test_start_all_goes_in_config_order_and_stop_all_in_reverse(cluster: Any, fake: FakeSystemd) -> None:
    code, out, err = await cluster("start", "all")
    assert code == 0, err
    assert out.splitlines() == [f"{agent}: started (active)" for agent in AGENTS]
    assert actions(fake) == [("start", unit(agent)) for agent in AGENTS]

    code, out, err = await cluster("stop", "all", "--yes")
    assert code == 0, err
    assert out.splitlines() == [f"{agent}: stopped (inactive)" for agent in reversed(AGENTS)]
    assert actions(fake)[8:] == [("stop", unit(agent)) for agent in reversed(AGENTS)]

    code, out, _ = await cluster("restart", "all", "-y")
    assert code == 0
    assert actions(fake)[16:] == [("restart", unit(agent)) for agent in AGENTS]


async def test_one_failure_is_exit_1_with_a_line_per_agent(cluster: Any, fake: FakeSystemd) -> None:
    fake.flag(f"fail@{unit('auditor')}")
    code, out, err = await cluster("start", "all")
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 8
    assert lines[3] == (
        f"auditor: start failed (failed): Job for {unit('auditor')} failed because the control process exited with "
        f'error code. See "systemctl --user status {unit("auditor")}" and "journalctl --user -xeu {unit("auditor")}" '
        "for details; see `atomizer-hq cluster logs auditor`"
    )
    assert [line.split(":")[1].strip() for line in lines if "auditor" not in line] == ["started (active)"] * 7
    assert "atomizer-hq: start failed for 1 of 8 agents: auditor" in err


async def test_json_reports_every_result(cluster: Any, fake: FakeSystemd) -> None:
    fake.flag(f"crash@{unit('nx-expert')}")
    code, out, _ = await cluster("restart", "nx-expert", "--json")
    assert code == 1
    document = json.loads(out)
    assert document["action"] == "restart" and document["ok"] is False
    [result] = document["results"]
    assert (result["agent"], result["unit"], result["ok"], result["state"]) == (
        "nx-expert", unit("nx-expert"), False, "failed",
    )  # fmt: skip
    assert result["error"]["code"] == "unit_command_failed"
    assert "succeeded but openclaw-atomizer@nx-expert.service is failed now" in result["error"]["message"]

    (fake.dir / f"crash@{unit('nx-expert')}").unlink()
    code, out, _ = await cluster("start", "all", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["ok"] is True and [r["agent"] for r in document["results"]] == AGENTS


# --- asking before stopping everything --------------------------------------------------------


@pytest.mark.parametrize("verb", ["stop", "restart"])
async def test_stop_all_without_yes_and_without_a_terminal_is_refused(
    cluster: Any, fake: FakeSystemd, verb: str
) -> None:
    code, out, err = await cluster(verb, "all")
    assert code == 2 and out == ""
    assert f"`cluster {verb} all` would {verb} every agent; add --yes to confirm" in err
    assert fake.calls() == []


async def test_single_agents_and_start_all_never_ask(cluster: Any, fake: FakeSystemd) -> None:
    # stdin is /dev/null: any question would be refused, so none is asked.
    assert (await cluster("stop", "webster"))[0] == 0
    assert (await cluster("start", "all"))[0] == 0


@pytest.mark.parametrize(("answer", "code"), [("y\n", 0), ("yes\n", 0), ("n\n", 1), ("\n", 1), ("", 1)])
async def test_on_a_terminal_stop_all_asks_first(cluster: Any, fake: FakeSystemd, answer: str, code: int) -> None:
    controller, terminal = pty.openpty()
    try:
        if answer:
            os.write(controller, answer.encode())  # typed ahead: the terminal holds the line until it is read
        else:
            os.write(controller, b"\x04")  # Ctrl-D: end of input
        result = await cluster("stop", "all", stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    got, out, err = result
    assert got == code, err
    question = f"stop all 8 agents ({', '.join(reversed(AGENTS))})? [y/N] "
    assert question in err
    if code == 0:
        assert actions(fake) == [("stop", unit(agent)) for agent in reversed(AGENTS)]
    else:
        assert "aborted: no unit was touched" in err and out == ""
        assert fake.calls() == []


async def test_yes_skips_the_question_on_a_terminal(cluster: Any, fake: FakeSystemd) -> None:
    controller, terminal = pty.openpty()
    try:
        code, _, err = await cluster("restart", "all", "--yes", stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert code == 0 and "[y/N]" not in err
    assert len(actions(fake)) == 8


# --- status -----------------------------------------------------------------------------------


async def test_status_shows_each_units_state_and_points_at_readiness(cluster: Any, fake: FakeSystemd) -> None:
    fake.set_state(unit("manager"), "active")
    fake.set_state(unit("webster"), "failed")
    fake.set_state(unit("auditor"), "activating")
    code, out, err = await cluster("status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["agent", "state", "unit"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["manager", "active"], ["tech-lead", "inactive"], ["secretary", "inactive"], ["auditor", "activating"],
        ["optimizer", "inactive"], ["study-builder", "inactive"], ["nx-expert", "inactive"], ["webster", "failed"],
    ]  # fmt: skip
    assert lines[1].split()[2] == unit("manager")
    assert "atomizer-hq status" in err
    assert {call[1] for call in fake.calls()} == {"is-active"}

    code, out, _ = await cluster("status", "webster", "--json")
    assert code == 0
    assert json.loads(out) == {
        "ok": True, "agents": [{"agent": "webster", "unit": unit("webster"), "state": "failed", "reason": None}],
    }  # fmt: skip
    code, out, _ = await cluster("status", "all", "--json")
    assert [a["agent"] for a in json.loads(out)["agents"]] == AGENTS


# --- logs -------------------------------------------------------------------------------------


async def test_logs_of_one_agent_and_of_all(cluster: Any, fake: FakeSystemd) -> None:
    fake.journal(unit("webster"), "gateway listening on 127.0.0.1:18828", "hook accepted", "model token expired")
    code, out, err = await cluster("logs", "webster", "--lines", "2")
    assert code == 0, err
    assert [line.split(": ", 1)[1] for line in out.splitlines()] == ["hook accepted", "model token expired"]
    assert fake.calls()[-1] == ["journalctl", "-u", unit("webster"), "-n", "2", "--no-pager", "-o", "short-iso"]

    code, out, _ = await cluster("logs", "all", "-n", "1")
    assert code == 0
    headers = [line for line in out.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {agent} ({unit(agent)}) <==" for agent in AGENTS]
    assert out.count("-- No entries --") == 7 and "model token expired" in out

    code, out, _ = await cluster("logs", "webster", "--json")
    document = json.loads(out)
    assert code == 0 and document["ok"] is True and document["lines"] == 100
    assert document["logs"][0]["agent"] == "webster" and "model token expired" in document["logs"][0]["text"]


@pytest.mark.parametrize("lines", ["0", "5001", "-3"])
async def test_log_lines_out_of_range_are_bad_input(cluster: Any, fake: FakeSystemd, lines: str) -> None:
    code, _, err = await cluster("logs", "webster", "--lines", lines)
    assert code == 2
    assert "the number of log lines must be between 1 and 5000" in err
    assert fake.calls() == []


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restart", "nx-exprt"], "no agent called 'nx-exprt'. Did you mean 'nx-expert'?"),
        (["stop", "a;rm -rf x"], "no agent called 'a;rm -rf x'."),
        (["logs", "$(reboot)"], "no agent called '$(reboot)'."),
        (["start"], "cluster start needs an agent or 'all', e.g. `atomizer-hq cluster start webster`"),
        (["start", "webster", "--lines", "5"], "--lines goes with `cluster logs` only"),
        (["reboot", "webster"], "invalid choice: 'reboot'"),
        (["logs", "webster", "--lines", "many"], "invalid int value: 'many'"),
    ],
)
async def test_bad_input_is_exit_2_and_nothing_runs(
    cluster: Any, fake: FakeSystemd, args: list[str], message: str
) -> None:
    code, out, err = await cluster(*args)
    assert code == 2 and out == ""
    assert message in err
    assert fake.calls() == [] and not (fake.dir / "calls.log").exists()


# --- no systemd -------------------------------------------------------------------------------


async def test_without_systemd_every_verb_says_so_and_exits_1(cluster: Any, fake: FakeSystemd) -> None:
    fake.flag("no-bus")
    code, out, err = await cluster("status")
    assert code == 1
    assert all(line.split()[1] == "unknown" for line in out.splitlines()[1:])
    assert err.count("Failed to connect to bus: No medium found") == 1  # once, for every agent it concerns
    assert "manager, tech-lead, secretary, auditor, optimizer, study-builder, nx-expert, webster: systemd is not" in err

    code, out, err = await cluster("restart", "all", "--yes")
    assert code == 1
    assert out.splitlines() == [
        f"{agent}: restart failed: systemd unavailable (Failed to connect to bus: No medium found)" for agent in AGENTS
    ]
    assert err.count("loginctl enable-linger $USER") == 1
    assert "restart failed for 8 of 8 agents" in err

    code, out, err = await cluster("logs", "webster")
    assert code == 1 and out == ""
    assert "atomizer-hq: systemd is not running for this user (Failed to connect to bus: No medium found)" in err

    code, out, _ = await cluster("status", "--json")
    assert code == 1
    document = json.loads(out)
    assert document["ok"] is False and {a["state"] for a in document["agents"]} == {"unknown"}


async def test_logs_without_a_user_session_say_systemd_is_missing_not_that_the_log_is_empty(
    cluster: Any, fake: FakeSystemd
) -> None:
    """journalctl reads files, not the bus: with no systemd user session it says "-- No entries --", exit 0."""
    fake.flag("no-session")
    for agent in ("webster", "all"):
        code, out, err = await cluster("logs", agent)
        assert code == 1 and out == "", out  # as `cluster status` says it: the operation failed, not bad input
        assert err == (
            "atomizer-hq: systemd is not running for this user (Failed to connect to bus: No medium found); "
            "on this host start agents by hand or enable lingering: loginctl enable-linger $USER\n"
        )


async def test_an_empty_log_with_systemd_running_stays_an_empty_log(cluster: Any, fake: FakeSystemd) -> None:
    code, out, err = await cluster("logs", "webster")
    assert code == 0 and out == "-- No entries --\n", err


async def test_logs_into_a_closed_pipe_end_quietly(tmp_path: Path, config_path: Path, fake: FakeSystemd) -> None:
    fake.journal(unit("webster"), *(f"line {i}" for i in range(2000)))
    reader, writer = os.pipe()
    os.close(reader)  # `atomizer-hq cluster logs … | head` once head has exited
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config_path), "cluster", "logs", "all", "-n", "2000",
            stdin=asyncio.subprocess.DEVNULL, stdout=writer, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(writer)
    _, err = await process.communicate()
    assert process.returncode == 0
    assert b"Traceback" not in err and b"BrokenPipe" not in err


async def test_host_actions_are_in_the_audit_trail(cluster: Any, fake: FakeSystemd, tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    code, _, err = await cluster("restart", "webster")
    assert code == 0, err
    with closing(sqlite3.connect(tmp_path / "atomizer.db")) as db:
        rows = db.execute("SELECT actor_kind, front_end, action, subject, decision FROM audit_log").fetchall()
    assert rows == [("person", "cli", "cluster.restart", "webster", "allowed")]
