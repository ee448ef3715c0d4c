"""What every benchmark shares: one result row, the table, results.json, the fleet and the service's wiring.

The simulated gateways run in their own process (`python -m bench.fleet`), as real gateways are other
processes: the service under measurement gets one core, the fleet the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests/ (the Discord harness, the board fakes) is imported from the repo root
    sys.path.insert(0, str(ROOT))

from bot.config import ClusterConfig, load_cluster_config, parse_cluster_config  # noqa: E402
from bot.settings import Settings  # noqa: E402

SHIPPED_CONFIG = ROOT / "config" / "cluster.toml"
RESULTS_PATH = ROOT / "bench" / "results.json"


@dataclass
class Result:
    """One row of the table and one entry of results.json."""

    name: str
    value: float
    unit: str
    baseline: float | None
    ratio: float | None
    floor: str  # the requirement, as a reader checks it: ">= 1000 /s", "<= 2 ms"
    passed: bool
    notes: str = ""


@dataclass
class Bench:
    """A benchmark's results so far, and the temporary directory it may write in."""

    name: str
    workdir: Path
    results: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> Result:
        self.results.append(result)
        return result


# --- the table and results.json -----------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(results: Sequence[Result]) -> str:
    headers = ("name", "value", "unit", "baseline", "ratio", "floor", "pass")
    rows = [
        (r.name, fmt(r.value), r.unit, fmt(r.baseline), fmt(r.ratio), r.floor, "PASS" if r.passed else "FAIL")
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    right = {1, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    notes = [f"  {r.name}: {r.notes}" for r in results if r.notes]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def write_results(results: Iterable[Result], path: Path = RESULTS_PATH, *, merge: bool = False) -> None:
    """`{"<name>": {"value": …, "unit": "…", "baseline": …, "ratio": …}}`; with `merge`, into the existing
    file, so a partial run (`python -m bench.run status_fanout`) keeps the other benchmarks' figures."""
    existing: dict[str, Any] = {}
    if merge and path.exists():
        with contextlib.suppress(ValueError, OSError):
            existing = json.loads(path.read_text(encoding="utf-8"))
    for r in results:
        existing[r.name] = {
            "value": _round(r.value),
            "unit": r.unit,
            "baseline": _round(r.baseline),
            "ratio": _round(r.ratio),
        }
    path.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):  # a crashed benchmark: JSON has no NaN
        return None
    return float(f"{value:.4g}") if abs(value) < 1000 else round(value, 1)


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 500 values is the 495th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --- configuration and settings -------------------------------------------------------------------


def new_token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


def fleet_config(
    base_port: int, *, extra_agents: int = 0, only: int | None = None, probe_timeout: float | None = None
) -> ClusterConfig:
    """The shipped fleet on free ports, optionally cut to its first `only` agents or grown by
    `extra_agents` generated ones (agent-009 …, as `atomizer-hq simulate --agents N` names them)."""
    config = load_cluster_config(SHIPPED_CONFIG).relocated(base_port, 4)
    raw = config.model_dump(mode="python")
    agents = raw["agents"][:only] if only is not None else raw["agents"]
    start = len(config.agents)
    for i in range(extra_agents):
        agents.append({"name": f"agent-{start + i + 1:03d}", "port": base_port + (start + i) * 4, "model": "sim"})
    raw["agents"] = agents
    raw["api"]["port"] = base_port + (start + extra_agents) * 4
    if probe_timeout is not None:
        raw["gateway"]["probe_timeout"] = probe_timeout
    return parse_cluster_config(raw, "bench-config")


def bench_settings(db_path: Path, hooks_token: str, api_tokens: dict[str, str] | None = None) -> Settings:
    """Settings as the environment would give them, but only from here (the caller's environment is ignored)."""
    values: dict[str, Any] = {
        "ATOMIZER_HOOKS_TOKEN": hooks_token,
        "ATOMIZER_DB": str(db_path),
        "ATOMIZER_GUILD_ID": "100000000000000001",
        "hooks_token_overrides": {},
        "api_token_vars": {},
    }
    if api_tokens:
        values["ATOMIZER_API_TOKENS"] = ",".join(f"{k}:{v}" for k, v in api_tokens.items())
    return Settings(**values)


def bench_env(**extra: str) -> dict[str, str]:
    """A child process's environment: this one without atomizer settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("ATOMIZER_") or k == "DISCORD_TOKEN")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


# --- the simulated fleet, in its own process ----------------------------------------------------


@dataclass
class FleetProcess:
    process: asyncio.subprocess.Process
    spec_path: Path

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@asynccontextmanager
async def fleet_process(
    config: ClusterConfig,
    token: str,
    workdir: Path,
    *,
    agent_options: dict[str, dict[str, Any]] | None = None,
    common: dict[str, Any] | None = None,
    readyz_delay_ms: dict[str, float] | None = None,
    record: Path | None = None,
) -> AsyncIterator[FleetProcess]:
    """One simulated gateway per agent of `config`, served by `python -m bench.fleet` until the block ends.

    `common` sets SimAgentSpec fields for every agent, `agent_options` per agent; `readyz_delay_ms`
    makes an agent answer its readiness probe that much later (health routes answer at once otherwise);
    `record` is a file every accepted hook is appended to, one JSON line each (ReceivedHook: agent, body,
    idempotency_key, `at` on the wall clock).
    """
    specs = [
        {"name": a.name, "port": a.port, **(common or {}), **(agent_options or {}).get(a.name, {})}
        for a in config.agents
    ]
    spec = {"token": token, "agents": specs, "readyz_delay_ms": readyz_delay_ms or {}}
    if record is not None:
        spec["record"] = str(record)
    spec_path = _write_json(workdir, spec)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fleet",
        str(spec_path),
        stdout=asyncio.subprocess.PIPE,
        env=bench_env(),
        cwd=str(ROOT),
    )
    fleet = FleetProcess(process, spec_path)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"READY":
            raise RuntimeError(f"the simulated fleet did not start (said {line!r})")
        yield fleet
    finally:
        await fleet.stop()


def _write_json(directory: Path, value: Any) -> Path:
    handle, name = tempfile.mkstemp(prefix="fleet-", suffix=".json", dir=directory)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(value, out)
    return Path(name)


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB (MiB), from /proc/<pid>/status."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def as_dict(result: Result) -> dict[str, Any]:
    return asdict(result)
