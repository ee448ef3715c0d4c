"""footprint: the running service's resident memory, and its time from start to ready.

The service runs in its own process (`python -m bench.service`: `atomizer-hq run`'s own run_service, with
Discord mocked) against 8 simulated agents, on a database seeded with 10,000 tasks and 100,000
delegations (plain sqlite3 executemany into the schema a Store created). Start to ready: from spawning
the process to the loopback API's /healthz reporting every check healthy but Discord's (mocked, so never
connected). Memory: VmRSS from /proc/<pid>/status once the bot is loaded and the API has served a
status round, the task list and a few delegations. The service's log goes to a file, shown on failure.
Baseline: the same service on an empty database. Each figure is the median of 3 starts.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import (
    ROOT,
    Bench,
    Result,
    bench_env,
    fleet_config,
    fleet_process,
    median,
    new_token,
    rss_mb,
)
from bot.simulator import free_ports
from bot.store import Store

TASKS = 10_000
DELEGATIONS = 100_000
FLOOR_RSS_MB = 100.0
FLOOR_READY_S = 1.5
STARTS = 3  # starts per database; each figure is the median
READY_DEADLINE_S = 30.0


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(9))
    hooks = new_token("hooks")
    api_token = new_token("api")
    empty_db, seeded_db = bench.workdir / "empty.db", bench.workdir / "seeded.db"
    for path in (empty_db, seeded_db):
        async with Store(path):  # the schema, as the service creates it
            pass
    agents = config.agent_names
    await asyncio.to_thread(_seed, seeded_db, agents)
    runs: dict[Path, list[tuple[float, float, float]]] = {empty_db: [], seeded_db: []}
    async with fleet_process(config, hooks, bench.workdir):
        for _ in range(STARTS):  # alternately, so the page cache favours neither
            for db in (empty_db, seeded_db):
                log = bench.workdir / f"service-{db.stem}-{len(runs[db])}.log"
                runs[db].append(await _measure(db, config.agents[0].port, config.api.port, hooks, api_token, log))
    empty = [median([r[k] for r in runs[empty_db]]) for k in range(3)]
    rss, peak, ready_s = (median([r[k] for r in runs[seeded_db]]) for k in range(3))
    bench.add(
        Result(
            "footprint",
            rss,
            "MB",
            empty[0],
            rss / empty[0],
            f"<= {FLOOR_RSS_MB:g} MB",
            rss <= FLOOR_RSS_MB,
            f"VmRSS with 8 agents, {TASKS:,} tasks, {DELEGATIONS:,} delegations, Discord mocked, after a status "
            f"round and a few API reads (peak VmHWM {peak:.1f} MB); baseline: the same on an empty database",
        )
    )
    bench.add(
        Result(
            "footprint_ready",
            ready_s,
            "s",
            empty[2],
            ready_s / empty[2],
            f"<= {FLOOR_READY_S:g} s",
            ready_s <= FLOOR_READY_S,
            "process spawn to /healthz reporting every check ok but Discord (mocked, never connected); "
            "baseline: the same on an empty database",
        )
    )


async def _measure(
    db: Path, base_port: int, api_port: int, hooks: str, api_token: str, log: Path
) -> tuple[float, float, float]:
    """(VmRSS MB, VmHWM MB, start-to-ready s) of one service process on `db`, its stderr in `log`."""
    env = bench_env(ATOMIZER_HOOKS_TOKEN=hooks, ATOMIZER_API_TOKENS=f"operator:{api_token}")
    url = f"http://127.0.0.1:{api_port}"
    stderr = log.open("wb")
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.service",
        str(db),
        str(base_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env=env,
        cwd=str(ROOT),
    )
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
            ready_s = None
            while ready_s is None:
                if process.returncode is not None:
                    raise RuntimeError(f"the service exited with {process.returncode} before it was ready")
                if time.perf_counter() - started > READY_DEADLINE_S:
                    raise RuntimeError(f"/healthz did not report ready within {READY_DEADLINE_S:g} s")
                try:
                    if _ready_without_discord(await http.get(f"{url}/healthz")):
                        ready_s = time.perf_counter() - started
                    else:
                        await asyncio.sleep(0.005)
                except httpx.TransportError:
                    await asyncio.sleep(0.005)
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            if line.strip() != b"READY":
                raise RuntimeError(f"the service did not load its bot (said {line!r})")
            headers = {"Authorization": f"Bearer {api_token}"}
            for path in (
                "/v1/status",
                "/v1/tasks?limit=100",
                "/v1/tasks?open=false&limit=100",
                "/v1/delegations?limit=50",
            ):
                response = await http.get(f"{url}{path}", headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
            await asyncio.sleep(0.5)
            rss, peak = rss_mb(process.pid)
        return rss, peak, ready_s
    except Exception:
        sys.stderr.write(f"--- the service's log ({log}):\n{_tail(log)}\n")
        raise
    finally:
        stderr.close()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:]


def _ready_without_discord(response: httpx.Response) -> bool:
    """/healthz says ready: 200, or 503 only because Discord is not connected (it is mocked here)."""
    if response.status_code == 200:
        return True
    try:
        checks = response.json().get("checks") or {}
    except ValueError:
        return False
    failing = {name for name, result in checks.items() if result != "ok"}
    return response.status_code == 503 and failing == {"discord"}


def _seed(path: Path, agents: list[str]) -> None:
    """10,000 tasks (a third open) with their creation events, and 100,000 finished delegations."""
    rng = random.Random(42)
    now = datetime.now(UTC)
    statuses = ("todo", "in_progress", "blocked", "review", "done", "done", "done", "done", "cancelled")
    tasks, events = [], []
    for i in range(1, TASKS + 1):
        at = (now - timedelta(minutes=TASKS - i)).isoformat()
        status = rng.choice(statuses)
        agent = rng.choice(agents)
        title = f"Task {i}: mesh study {rng.randrange(1000)} for the M{rng.randrange(1, 4)} mirror"
        tasks.append(
            (
                i,
                title,
                None,
                status,
                "agent",
                agent,
                None,
                rng.choice(("low", "normal", "high", "urgent")),
                None,
                "waiting for the NX licence" if status == "blocked" else None,
                "person",
                "antoine",
                at,
                at,
                1,
            )
        )
        events.append((i, at, "person", "antoine", "cli", "create", None, title, None))
    delegations = []
    for i in range(1, DELEGATIONS + 1):
        at = (now - timedelta(seconds=DELEGATIONS - i)).isoformat()
        status = "accepted" if i % 50 else "failed"
        delegations.append(
            (
                i,
                uuid.UUID(int=rng.getrandbits(128)).hex,
                at,
                at,
                "agent",
                "manager",
                None,
                None,
                "api",
                rng.choice(agents),
                f"Instruction {i}: run the thermal load case {rng.randrange(100)} and report",
                1,
                "channel:100000000000000101",
                f"T-{rng.randrange(1, TASKS + 1)}" if i % 3 == 0 else None,
                status,
                1,
                str(uuid.UUID(int=rng.getrandbits(128))) if status == "accepted" else None,
                None if status == "accepted" else "the gateway refused it (HTTP 400)",
                None,
                (now + timedelta(minutes=10)).isoformat(),
                at if status == "accepted" else None,
                120.0,
            )
        )
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO tasks (id, title, description, status, assignee_kind, assignee, assignee_label, "
                "priority, due, blocked_reason, creator_kind, creator, created_at, updated_at, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tasks,
            )
            conn.executemany(
                "INSERT INTO task_events (task_id, at, actor_kind, actor, front_end, action, old_value, new_value, "
                "note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                events,
            )
            conn.executemany(
                "INSERT INTO delegations (id, idem_key, created_at, updated_at, requester_kind, requester, "
                "requester_user_id, via, front_end, agent, message, deliver, target, task, status, attempts, run_id, "
                "last_error, next_attempt_at, expires_at, accepted_at, latency_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                delegations,
            )
    finally:
        conn.close()
