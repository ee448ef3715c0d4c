"""workflow_crash: the real `atomizer-hq run --no-discord` killed (SIGKILL) at random points, KILLS times.

The service is the real program in its own process (`python -m bot --config FILE run --no-discord`, a
database file, the loopback API); the simulated fleet is another process (`bench.fleet`, recording
every hook it accepts, `--record`), every gateway taking LATENCY_MS to admit a hook so that kills land
inside dispatches too. webster runs 2026.2.12 (no idempotency keys), the others 2026.9.6.

The bench process plays the people and the agents, through the loopback API only: it keeps IN_FLIGHT
runs of a five-step workflow going (`POST /v1/workflow-runs` as `operator`: mesh ‖ material → thermal →
review (an approval, by `admin`) → report), and each agent reports its step's result
(`POST …/steps/{step}/result` with its own token) once the simulator shows it received the step's hook.
Meanwhile the service is killed at a random moment (uniform 0.1-0.8 s after it answers /healthz),
restarted on the same database, KILLS times; then the runs left are driven to their end.

Figures: `workflow_crash_duplicates`: steps whose hook reached an agent more than once (the simulator's
record, by idempotency key, against the delegations' `workflow_step`); `workflow_crash_lost`: runs
started that neither ended nor wait for a person with a stated reason (a step `unconfirmed`: a
2026.2.12 send cut by the kill may or may not have arrived, so it is never re-sent on its own).
The notes say how many kills landed mid-dispatch (a step `dispatching`, or a workflow delegation
`sending`, in the database as the process died).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ROOT, SHIPPED_CONFIG, Bench, Result, bench_env, fleet_config, fleet_process, new_token
from bot.config import ClusterConfig, with_ports
from bot.simulator import RELEASE_LEGACY, free_ports

KILLS = 20
IN_FLIGHT = 4
LATENCY_MS = 25.0
KILL_WINDOW_S = (0.1, 0.8)
DRAIN_S = 30.0
LEGACY = "webster"
WORKFLOW = """\
name: crash-study
description: mesh and material in parallel, the thermal analysis, an approval, the report
deliver_to: none
steps:
  - {id: mesh, agent: nx-expert, message: Mesh the mirror., timeout: 1h}
  - {id: material, agent: webster, message: Find the CTE of Zerodur., timeout: 1h}
  - id: thermal
    agent: optimizer
    needs: [mesh, material]
    message: "Thermal analysis. Mesh: ${{ steps.mesh.output }} Material: ${{ steps.material.output }}"
    timeout: 1h
  - {id: review, needs: [thermal], approval: {prompt: "Approve?", approvers: ["role:admin"]}}
  - {id: report, agent: secretary, needs: [review], message: "Report: ${{ steps.thermal.output }}", timeout: 1h}
"""
WAITS_FOR_A_PERSON = ("unconfirmed", "timed_out")


def write_config(workdir: Path, config: ClusterConfig) -> Path:
    """The shipped cluster file, text-edited: agents and the API on the bench's ports, the bench's workflows."""
    ports = {agent.name: agent.port for agent in config.agents}
    text = with_ports(SHIPPED_CONFIG.read_text(encoding="utf-8"), ports, config.api.port)
    (workdir / "workflows").mkdir()
    (workdir / "workflows" / "crash.yaml").write_text(WORKFLOW, encoding="utf-8")
    text = text.replace('dir = "workflows"', f'dir = "{workdir / "workflows"}"', 1)
    path = workdir / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Service:
    """`atomizer-hq run --no-discord`, started, killed and started again on one database."""

    def __init__(self, config_path: Path, db: Path, env: dict[str, str], log: Path, url: str) -> None:
        self.config_path, self.db, self.env, self.log, self.url = config_path, db, env, log, url
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(self.config_path), "--db", str(self.db),
                "--log-level", "WARNING", "run", "--no-discord", env=self.env, cwd=str(ROOT), stdout=out, stderr=out,
            )  # fmt: skip
        end = time.monotonic() + 60
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(self.url + "/healthz") as response:
                    if response.status == 200:
                        return
            if self.process.returncode is not None:
                raise RuntimeError(f"atomizer-hq run exited with {self.process.returncode}; see {self.log}")
            await asyncio.sleep(0.02)
        raise RuntimeError(f"atomizer-hq run did not answer /healthz within 60 s; see {self.log}")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def mid_dispatch(db: Path) -> bool:
    """Whether the process died inside a step's dispatch: a step `dispatching`, or its delegation `sending`."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        steps = conn.execute("SELECT count(*) FROM workflow_steps WHERE status = 'dispatching'").fetchone()[0]
        sending = conn.execute(
            "SELECT count(*) FROM delegations WHERE status = 'sending' AND workflow_step IS NOT NULL"
        ).fetchone()[0]
    return steps + sending > 0


class Driver:
    """The people and the agents: start runs, approve gates, report the results of steps the agents received."""

    def __init__(self, url: str, tokens: dict[str, str], record: Path) -> None:
        self.url, self.tokens, self.record = url, tokens, record
        self.received: set[str] = set()  # D-n whose hook reached its agent
        self._offset = 0
        self.started: set[str] = set()  # W-n answered 201
        self.starting = True
        self.refused: Counter[str] = Counter()  # what the service refused, by route and status (for the notes)
        self.last_refusal = ""

    def _read_record(self) -> None:
        if not self.record.exists():
            return
        with self.record.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            name = json.loads(line)["body"].get("name", "")
            self.received.add(name.removeprefix("atomizer-hq "))

    async def _call(self, http: aiohttp.ClientSession, method: str, path: str, who: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        async with http.request(method, self.url + path, json=body, headers=headers) as response:
            answer = await response.json()
            if response.status >= 400:
                self.refused[f"{method} {path.split('/')[-1]} {response.status}"] += 1
                self.last_refusal = f"{method} {path}: {response.status} {answer}"
            return response.status, answer

    async def step_once(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """One round over the running runs (starting one if fewer than IN_FLIGHT move); returns their details."""
        self._read_record()
        status, listed = await self._call(http, "GET", "/v1/workflow-runs?status=running&limit=100", "operator")
        details = []
        for summary in listed["runs"] if status == 200 else []:
            status, run = await self._call(http, "GET", f"/v1/workflow-runs/{summary['id']}", "operator")
            if status == 200:
                details.append(run)
        active = [run for run in details if not _waits_for_a_person(run)]
        if self.starting and len(active) < IN_FLIGHT:
            body = {"workflow": "crash-study"}
            status, started = await self._call(http, "POST", "/v1/workflow-runs", "operator", body)
            if status == 201:
                self.started.add(started["id"])
        for run in active:
            for step in run["steps"]:
                base = f"/v1/workflow-runs/{run['id']}/steps/{step['id']}"
                if step["status"] == "waiting_approval":
                    await self._call(http, "POST", f"{base}/approve", "admin", {"reason": "ok"})
                elif step["status"] == "running" and step["delegation"] in self.received:
                    output = {"ok": True, "output": f"{step['id']} of {run['id']} done"}
                    await self._call(http, "POST", f"{base}/result", step["agent"], output)
        return details

    async def drive(self, http: aiohttp.ClientSession, until: asyncio.Event) -> None:
        while not until.is_set():
            try:
                await self.step_once(http)
            except (aiohttp.ClientError, OSError, ValueError):
                pass  # the service is down (killed): try again once it is back
            await asyncio.sleep(0.01)


def _waits_for_a_person(run: dict[str, Any]) -> bool:
    """Blocked on a step a person must look at (unconfirmed, timed out), not on a gate the driver approves."""
    statuses = {step["status"] for step in run["steps"]}
    return (
        run["status"] == "running"
        and run["shown_status"] == "waiting"
        and bool(statuses & set(WAITS_FOR_A_PERSON))
        and "waiting_approval" not in statuses
    )


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(9))
    token = new_token("hooks")
    record = bench.workdir / "hooks.jsonl"
    db = bench.workdir / "crash.db"
    identities = ["operator", "admin", *config.agent_names]
    tokens = {name: new_token(name) for name in identities}
    env = bench_env(
        ATOMIZER_HOOKS_TOKEN=token,
        ATOMIZER_API_TOKENS=",".join(f"{k}:{v}" for k, v in tokens.items()),
    )
    url = f"http://127.0.0.1:{config.api.port}"
    service = Service(write_config(bench.workdir, config), db, env, bench.workdir / "service.log", url)
    driver = Driver(url, tokens, record)
    rng = random.Random()
    killed_mid_dispatch = 0
    options = {LEGACY: {"release": RELEASE_LEGACY}}
    async with (
        fleet_process(config, token, bench.workdir, common={"latency_ms": LATENCY_MS}, agent_options=options,
                      record=record),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):  # fmt: skip
        await service.start(http)
        stop = asyncio.Event()
        driving = asyncio.create_task(driver.drive(http, stop))
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(*KILL_WINDOW_S))
                await service.kill()
                killed_mid_dispatch += mid_dispatch(db)
                await service.start(http)
            driver.starting = False
            end = time.monotonic() + DRAIN_S
            while time.monotonic() < end:
                with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                    runs = await driver.step_once(http)
                    if all(_waits_for_a_person(r) for r in runs):
                        break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await driving
            await service.stop()
    duplicates, strays, runs, waiting, lost, reasons = audit(db, record, driver.started)
    notes = (
        f"{KILLS} SIGKILLs of `atomizer-hq run --no-discord` ({killed_mid_dispatch} mid-dispatch), {len(runs)} runs "
        f"started ({sum(1 for s in runs.values() if s == 'succeeded')} succeeded, {waiting} waiting for a person: "
        f"{', '.join(reasons) or 'none'}), {sum(_hook_counts(record).values())} hooks received"
        + (f"; {strays} hooks with no delegation" if strays else "")
        + (f"; answers 409 to the driver's stale views: {sum(driver.refused.values())}" if driver.refused else "")
    )
    bench.add(Result("workflow_crash_duplicates", duplicates, "steps", None, None, "= 0", duplicates == 0, notes))
    bench.add(
        Result(
            "workflow_crash_lost", lost, "runs", None, None, "= 0", lost == 0 and strays == 0,
            "runs neither ended nor waiting for a person with a reason (a step unconfirmed or timed out)",
        )
    )  # fmt: skip


def _hook_counts(record: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if record.exists():
        for line in record.read_text(encoding="utf-8").splitlines():
            key = json.loads(line)["idempotency_key"]
            if key:
                counts[key] += 1
    return counts


def audit(db: Path, record: Path, started: set[str]) -> tuple[int, int, dict[str, str], int, int, list[str]]:
    """(steps dispatched twice, hooks of no delegation, run -> status, runs waiting for a person, runs lost,
    the reasons they wait)."""
    hooks = _hook_counts(record)
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        keys = dict(conn.execute("SELECT idem_key, workflow_step FROM delegations WHERE workflow_step IS NOT NULL"))
        runs = {f"W-{row[0]}": row[1] for row in conn.execute("SELECT id, status FROM workflow_runs")}
        steps = conn.execute("SELECT run_id, step_id, status, error FROM workflow_steps").fetchall()
    per_step: Counter[str] = Counter()
    for key, count in hooks.items():
        if key in keys:
            per_step[keys[key].split("#")[0]] += count
    strays = sum(count for key, count in hooks.items() if key not in keys)
    duplicates = sum(1 for count in per_step.values() if count > 1)
    waiting_steps: dict[str, list[str]] = {}
    for run_id, step_id, status, _error in steps:
        if status in WAITS_FOR_A_PERSON and runs.get(f"W-{run_id}") == "running":
            waiting_steps.setdefault(f"W-{run_id}", []).append(f"{step_id} {status}")
    states: dict[str, list[str]] = {}
    for run_id, step_id, status, _error in steps:
        states.setdefault(f"W-{run_id}", []).append(f"{step_id} {status}")
    lost_runs = [run_id for run_id, status in runs.items() if status == "running" and run_id not in waiting_steps]
    lost_runs += sorted(started - set(runs))  # answered 201, then not in the database
    reasons = [f"{run_id}: {', '.join(why)}" for run_id, why in sorted(waiting_steps.items())]
    # A lost run is named with its steps' states: where it stopped moving.
    reasons += [f"LOST {run_id}: {', '.join(states.get(run_id, ['not recorded']))}" for run_id in lost_runs]
    return duplicates, strays, runs, len(waiting_steps), len(lost_runs), reasons
