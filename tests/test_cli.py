"""The command line through its real entry point, in a subprocess, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from bot.config import load_cluster_config, with_ports
from bot.simulator import free_ports
from tests.conftest import HOOKS_TOKEN, SHIPPED_CONFIG, FleetStarter
from tests.e2e.conftest import launch_bot


def relocated_config(tmp_path: Path, ports: dict[str, int]) -> Path:
    """The shipped cluster file with the agents moved to test ports (text edit: it stays the real file)."""
    text = with_ports(SHIPPED_CONFIG.read_text(encoding="utf-8"), ports)
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ATOMIZER_") and k not in ("DISCORD_TOKEN", "COLUMNS")
    }
    env.update({"ATOMIZER_HOOKS_TOKEN": HOOKS_TOKEN, "ATOMIZER_DB": str(tmp_path / "atomizer.db")}, **extra)
    return env


async def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_json_reports_every_agent_even_when_some_never_answer(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    config, _ = await start_fleet(
        release={"webster": "2026.2.12"},
        specs={"auditor": {"down": True}, "study-builder": {"down": True}, "optimizer": {"hang": True}},
    )
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    code, out, err = await run_cli("--config", str(path), "status", "--json", "--timeout", "1", env=cli_env(tmp_path))
    assert code == 0, err
    report = json.loads(out)
    states = {a["name"]: a["state"] for a in report["agents"]}
    assert states == {
        "manager": "ready", "tech-lead": "ready", "secretary": "ready", "auditor": "down",
        "optimizer": "down", "study-builder": "down", "nx-expert": "ready", "webster": "ready",
    }  # fmt: skip
    assert report["counts"]["ready"] == 5 and report["counts"]["down"] == 3
    assert report["took_ms"] < 1000 + 300  # one round is bounded by the probe timeout, not by 3 of them


async def test_status_plain_text_is_a_table(start_fleet: FleetStarter, tmp_path: Path) -> None:
    config, _ = await start_fleet(specs={"auditor": {"down": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    code, out, _ = await run_cli("--config", str(path), "status", env=cli_env(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["agent", "state", "unit", "port"]
    assert any(line.startswith("auditor") and " down " in line for line in lines)
    assert "8 agents: 7 ready, 1 down" in out


async def run_cli_on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """The CLI with its stdout on a pseudo-terminal (colours and all); the output without its escapes."""
    controller, terminal = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *args, env=env, stdout=terminal, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        os.close(terminal)

    def read_all() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    try:
        raw = await asyncio.to_thread(read_all)
    finally:
        os.close(controller)
    code = await process.wait()
    return code, re.sub(r"\x1b\[[0-9;]*m", "", raw.decode().replace("\r\n", "\n"))


@pytest.mark.parametrize(("columns", "terminal"), [(60, False), (80, False), (200, False), (80, True), (60, True)])
async def test_status_fits_the_terminal_and_always_shows_state_and_why(
    start_fleet: FleetStarter, tmp_path: Path, columns: int, terminal: bool
) -> None:
    config, _ = await start_fleet(
        release={"webster": "2026.2.12"}, specs={"auditor": {"down": True}, "optimizer": {"hang": True}}
    )
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env = cli_env(tmp_path, COLUMNS=str(columns))
    args = ("--config", str(path), "status", "--timeout", "1")
    if terminal:
        code, out = await run_cli_on_a_terminal(*args, env=env)
        err = ""
    else:
        code, out, err = await run_cli(*args, env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), "\n".join(line for line in lines if len(line) > columns)
    auditor_port = {a.name: a.port for a in config.agents}["auditor"]
    why = {
        "auditor": ("down", f"connection refused on 127.0.0.1:{auditor_port} (the gateway is not listening)"),
        "optimizer": ("down", "no answer within 1 s"),
        "webster": ("ready", "hooks answer (no health routes: release 2026.2.x)"),
        "manager": ("ready", ""),
    }
    for agent, (state, reason) in why.items():
        [start] = [i for i, line in enumerate(lines) if line.split()[:1] == [agent]]
        end = start + 1
        while end < len(lines) and lines[end].startswith(" "):  # the detail's continuation lines
            end += 1
        assert lines[start].split()[1] == state, lines[start]
        assert "".join(reason.split()) in "".join("".join(lines[start:end]).split()), (reason, lines[start:end])
    if columns == 200:  # room for everything: one line per agent, every column
        assert lines[0].split() == ["agent", "state", "unit", "port", "model", "latency", "release", "since", "up",
                                    "24h", "last", "delegation", "detail"]  # fmt: skip
        assert len(lines) == 1 + 8 + 2
    assert "8 agents: 6 ready, 2 down" in " ".join(out.split())


async def test_status_without_a_hooks_token_says_what_to_set(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    del env["ATOMIZER_HOOKS_TOKEN"]
    code, out, err = await run_cli("--config", str(SHIPPED_CONFIG), "status", env=env)
    assert code == 2 and out == ""
    assert "ATOMIZER_HOOKS_TOKEN: not set for manager" in err


async def test_a_foreign_database_is_refused_with_exit_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n", encoding="utf-8")
    code, _, err = await run_cli("--config", str(SHIPPED_CONFIG), "--db", str(notes), "status", env=cli_env(tmp_path))
    assert code == 2
    assert "is not an SQLite database" in err and "left untouched" in err
    assert notes.read_text(encoding="utf-8") == "not a database\n"


async def test_simulate_serves_until_sigterm_and_frees_its_ports(tmp_path: Path) -> None:
    base = free_ports(3)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(SHIPPED_CONFIG), "simulate",
        "--agents", "3", "--base-port", str(base), "--release", "tech-lead=2026.2.12", "--down", "secretary",
        env=cli_env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    lines = [(await process.stdout.readline()).decode() for _ in range(3)]
    assert lines[0].startswith("manager") and f":{base} " in lines[0] and "2026.9.6" in lines[0]
    assert lines[1].startswith("tech-lead") and "2026.2.12" in lines[1]
    assert lines[2].startswith("secretary") and "down" in lines[2]
    reader, writer = await asyncio.open_connection("127.0.0.1", base)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine; a listener is not
        probe.bind(("127.0.0.1", base))
        probe.listen()


async def test_simulate_shows_the_faults_an_operator_rehearses(tmp_path: Path) -> None:
    """A gateway without the Discord plugin, one without model credentials, one with hooks off: each as
    the real ones answer, so `doctor` and /delegate can be tried against them."""
    base = free_ports(3)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(SHIPPED_CONFIG), "simulate", "--agents", "3",
        "--base-port", str(base), "--no-discord-plugin", "manager", "--no-model", "tech-lead",
        "--hooks-disabled", "secretary",
        env=cli_env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines = [(await process.stdout.readline()).decode() for _ in range(3)]
        assert "no-discord-plugin" in lines[0] and "no-model" in lines[1] and "hooks-disabled" in lines[2]
        token = cli_env(tmp_path)["ATOMIZER_HOOKS_TOKEN"]
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            headers = {"Authorization": f"Bearer {token}"}
            body = {"message": "x", "channel": "discord", "to": "channel:100000000000000101"}
            answers = [
                await http.post(f"http://127.0.0.1:{base + i * 4}/hooks/agent", json=body, headers=headers)
                for i in range(3)
            ]
        assert answers[0].status_code == 400 and "channel must be last" in answers[0].json()["error"]
        assert answers[1].status_code == 200  # accepted; the run fails inside the gateway
        assert answers[2].status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--down", "nobody"], "--down: unknown agent 'nobody'"),
        (["simulate", "--no-discord-plugin", "webstr"], "--no-discord-plugin: unknown agent 'webstr'"),
        (["simulate", "--release", "2027.1.1"], "2027.1.1"),
        (["simulate", "--fail-rate", "2"], "--fail-rate must be between 0 and 1"),
        (["simulate", "--agents", "0"], "--agents must be at least 1"),
    ],
)
async def test_simulate_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = await run_cli("--config", str(SHIPPED_CONFIG), *args, env=cli_env(tmp_path))
    assert code == 2
    assert message in err


async def test_usage_errors_exit_2_and_help_lists_the_commands(tmp_path: Path) -> None:
    code, out, _ = await run_cli("--help", env=cli_env(tmp_path))
    assert code == 0
    for command in ("run", "demo", "simulate", "check-config", "status"):
        assert command in out
    code, _, err = await run_cli("frobnicate", env=cli_env(tmp_path))
    assert code == 2 and "invalid choice" in err


async def test_the_demo_shows_the_fleet_and_leaves_nothing_running(tmp_path: Path) -> None:
    root = SHIPPED_CONFIG.parent.parent
    code, out, err = await run_cli("demo", env=cli_env(tmp_path), cwd=root)
    assert code == 0, err
    assert "$ atomizer-hq status" in out
    assert "8 agents: 6 ready, 2 down" in out
    assert "→ accepted by nx-expert: D-1, runId " in out
    assert "to='channel:100000000000000101'" in out
    assert "→ refused: tech-lead may not delegate to manager" in out
    assert "→ queued: webster is unavailable (connection refused" in out
    assert re.search(r"\); will retry until \d\d:\d\d:\d\d UTC\n", out)  # the stored expiry, not a constant
    assert "delivered to webster (runId " in out and "webster ran it 1 time(s)" in out
    assert "→ ❗ T-1 ⬜ todo · nx-expert · Mesh the M2 mirror" in out
    assert "→ the bot reacts ✅ (T-1 → done)" in out
    assert "T-1 in_progress → done by nx-expert: meshed, 42k elements (task-board)" in out
    narrated = re.findall(r"^/task add .*\n  → (?:.*? )?(T-\d+) ", out, re.MULTILINE)
    board = out.split("the live board")[1].split("history:")[0]
    shown = re.findall(r"^┃\s+\S+ (T-\d+) ", board, re.MULTILINE)
    assert shown and set(shown) <= set(narrated), (shown, narrated)  # no task the tour never made
    assert "sent with channel='discord' to='channel:100000000000000103'" in out
    assert "┃ Daily standup · 24 h to " in out and "delegations 1 in / 1 accepted / 0 failed · tasks 1 done" in out
    assert not list(tmp_path.glob("*.db")), "the demo uses a temporary database, not the operator's"


async def test_the_demo_tours_a_workflow_run_across_a_restart(tmp_path: Path) -> None:
    root = SHIPPED_CONFIG.parent.parent
    code, out, err = await run_cli("demo", env=cli_env(tmp_path), cwd=root)
    assert code == 0, err
    tour = out.split("--- workflows")[1]
    assert "$ atomizer-hq workflow plan m2-mirror-study" in tour and "wave 3  review    approval" in tour
    assert "dispatched together" in tour
    assert "Mesh: m2_thermal.fem" in tour and "Material: Zerodur Class 0" in tour  # the join carries both outputs
    assert "→ refused: antoine (admin) started this run and may not approve" in tour
    assert "W-1/review: approved by you; the gate is approved" in tour
    before, after = tour.split("*** atomizer-hq stops while optimizer works on thermal")
    assert "thermal      optimizer      running" in before
    assert "WorkflowEngine.recover()" in after and "→ no step was dispatched twice" in after
    assert "W-1 m2-mirror-study: succeeded" in after
    last = after.rsplit("hooks per step, counted by the simulator: ", 1)[1].splitlines()[0]
    assert last == "mesh 1, material 1, thermal 1, report 1"
    for step in ("mesh", "material", "thermal", "report"):
        assert f"→ 200: W-1/{step} succeeded" in tour


async def test_the_demo_routes_by_capability_and_draws_a_capped_chain(tmp_path: Path) -> None:
    root = SHIPPED_CONFIG.parent.parent
    code, out, err = await run_cli("demo", env=cli_env(tmp_path), cwd=root)
    assert code == 0, err
    routing, rest = out.split("--- routing")[1].split("--- a chain")
    chain, capped = rest.split("--- the depth cap")
    # auditor alone has review, and it is down: chosen and queued, said so; never someone without review.
    assert "queued for auditor: no agent with review is ready" in routing
    assert re.search(r"auditor +yes +yes +no .*chosen \(queued until it is ready\)", routing)
    assert re.search(r"route: nx-expert: has meshing; ready; \d+ in flight", routing)
    assert re.search(r"→ accepted by nx-expert: D-\d+", routing)
    # manager → tech-lead → optimizer → nx-expert: three delegations, one chain, drawn
    assert "chain of 3, 3 deep" in chain
    assert re.search(r"\n  D-\d+ tech-lead: accepted.*by manager", chain)
    assert re.search(r"  └─ D-\d+ optimizer: accepted.*by tech-lead", chain)
    assert re.search(r"     └─ D-\d+ nx-expert: accepted.*by optimizer", chain)
    # under a person's request the same hops go one level deeper: the fourth is refused, not recorded
    assert "may not go deeper" in capped and "the limit is 3" in capped
    assert "→ refused" in capped.splitlines()[-1] and capped.count("\n  → D-") == 2


async def test_delegate_from_the_host(start_fleet: FleetStarter, tmp_path: Path) -> None:
    config, fleet = await start_fleet(specs={"webster": {"down": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))

    code, out, err = await run_cli(*base, "delegate", "nx-expert", "Mesh the M2 mirror", env=env)
    assert code == 0, err
    assert out.startswith("D-1 to nx-expert: accepted (runId ")
    [run] = fleet.received("nx-expert")
    assert (run.body["channel"], run.body["to"]) == ("discord", "channel:100000000000000101")

    code, out, _ = await run_cli(*base, "delegate", "--as", "tech-lead", "manager", "Approve the budget", env=env)
    assert code == 1
    assert "tech-lead may not delegate to manager" in out + _ and "Who could:" in out + _

    code, out, _ = await run_cli(*base, "delegate", "webster", "Find the CTE", "--json", env=env)
    assert code == 0
    record = json.loads(out)["delegation"]
    assert record["status"] == "queued" and record["id"] == "D-2" and record["agent"] == "webster"

    code, out, _ = await run_cli(*base, "delegate", "nx-expert", "Mesh", "--dry-run", "--to", "#task-board", env=env)
    assert code == 0 and "dry run: would be allowed" in out and '"to": "channel:100000000000000102"' in out

    code, _, err = await run_cli(*base, "delegate", "nx-exprt", "Mesh", env=env)
    assert code == 2 and "Did you mean 'nx-expert'?" in err
    code, _, err = await run_cli(*base, "delegate", "nx-expert", "  ", env=env)
    assert code == 2 and "the instruction is empty" in err
    for blank in ("", " \t "):  # an unset $CHANNEL is a slip, not "deliver to #technical"
        code, out, err = await run_cli(*base, "delegate", "nx-expert", "Mesh", "--to", blank, env=env)
        assert code == 2 and out == "" and "Traceback" not in err
        assert "the delivery target is empty; write user:<id>, channel:<id>, #channel" in err

    code, out, _ = await run_cli(*base, "delegations", "--json", env=env)
    assert code == 0
    assert [d["id"] for d in json.loads(out)] == ["D-2", "D-1"]
    code, out, _ = await run_cli(*base, "delegations", "show", "D-2", env=env)
    assert code == 0 and out.startswith("D-2 to webster: queued: webster is unavailable (connection refused")
    expires = record["expires_at"][:19].replace("T", " ")
    for line in (
        "  instruction   Find the CTE\n", "  agent         webster\n", "  delivered to  channel:100000000000000101\n",
        "  task          -\n", "  status        queued: connection refused on 127.0.0.1:", "  attempts      1\n",
        "  runId         -\n", f"  created       {record['created_at'][:19].replace('T', ' ')} UTC\n",
        f"  expires       {expires} UTC\n",
    ):  # fmt: skip
        assert line in out, (line, out)
    assert "@host (person, cli)\n" in out.split("  requested by  ")[1].split("\n")[0] + "\n"
    code, out, _ = await run_cli(*base, "delegations", "show", "D-1", env=env)
    assert code == 0 and out.startswith("D-1 to nx-expert: accepted (runId ")
    assert f"  runId         {run.run_id}\n" in out and "  status        accepted\n" in out
    code, out, _ = await run_cli(*base, "delegations", "show", "D-2", "--json", env=env)
    assert code == 0 and json.loads(out) == [record]  # --json stays the full record
    assert len(fleet.received()) == 1


async def test_delegate_wait_that_runs_out_says_what_happens_next(start_fleet: FleetStarter, tmp_path: Path) -> None:
    """--wait ends before webster is back: not silence and not success; when the outbox gives up, and how to follow."""
    config, fleet = await start_fleet(specs={"webster": {"down": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))
    code, out, err = await run_cli(*base, "delegate", "webster", "Find the CTE", "--wait", "--wait-s", "0.5", env=env)
    assert code == 3, err
    assert out.startswith("D-1 to webster: queued: webster is unavailable (connection refused")
    code, shown, _ = await run_cli(*base, "delegations", "show", "D-1", "--json", env=env)
    [record] = json.loads(shown)
    until = f"{record['expires_at'][:19].replace('T', ' ')} UTC"
    assert record["status"] == "queued" and f"will retry until {until} while `atomizer-hq run` is up" in out
    assert (
        f"atomizer-hq: still queued after waiting 0.5 s: the outbox of `atomizer-hq run` retries it until {until}; "
        "follow it with `atomizer-hq delegations show D-1`"
    ) in err
    assert fleet.received() == []

    code, _, err = await run_cli(*base, "delegate", "webster", "x", "--wait", "--wait-s", "-1", env=env)
    assert code == 2 and "--wait-s is in seconds, more than 0" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--db", "/proc/no-such-dir/atomizer.db", "status"],
            "cannot create the database's directory /proc/no-such-dir",
        ),
        (["status", "--timeout", "-1"], "--timeout is in seconds, more than 0 and at most 60; not -1"),
    ],
)
async def test_bad_places_and_numbers_are_clear_errors_not_tracebacks(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = await run_cli("--config", str(SHIPPED_CONFIG), *args, env=cli_env(tmp_path))
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


async def test_discord_voice_warnings_never_reach_stderr(tmp_path: Path) -> None:
    """`run` makes a discord.py client, which warns that voice needs PyNaCl and davey: noise for a bot that never
    speaks. Discord is unreachable here (a closed loopback port), so `run` logs in, says it will retry, and is
    stopped; its log is complete then."""
    config = load_cluster_config(SHIPPED_CONFIG).relocated(free_ports(8), 4)
    bot = await launch_bot(config, f"http://127.0.0.1:{free_ports(1)}/api/v10", tmp_path)
    try:
        await bot.wait_for_line("cannot reach Discord")
    finally:
        assert await bot.stop() == 0
    text = bot.log()
    assert "discord.client: logging in using static token" in text, text  # the client was made (and logs)
    assert "voice will NOT be supported" not in text and "PyNaCl" not in text and "davey" not in text
