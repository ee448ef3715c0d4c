"""delegate_throughput: 2,000 delegations through the core service, against two baselines of the same run.

- the service: `DelegationService.delegate` (authority check, SQLite record, HTTP to the agent, status
  update), 64 in flight, on a real database file, against 8 simulated gateways in another process;
- the old way: one `curl` process per delegation, one after another, with the old delegate.sh's
  payload and bearer straight to the gateway (a sample of 100; the rate is extrapolated);
- bare loops: the same POSTs with no persistence and no checks, from an httpx AsyncClient (the issue's
  baseline) and from the aiohttp client the service itself runs on (what the checks and records cost).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx

from bench.common import Bench, Result, bench_settings, fleet_config, fleet_process, new_token
from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig
from bot.gateway import GatewayClient, encode_body
from bot.services import open_services
from bot.simulator import free_ports

COUNT = 2_000
CONCURRENCY = 64
HTTPX_CONCURRENCY = 8
CURL_SAMPLE = 100
WARMUP = 64
FLOOR_RATE = 1_000.0
FLOOR_VS_CURL = 30.0
FLOOR_VS_HTTPX = 0.5
T = TypeVar("T")


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(9))
    token = new_token("hooks")
    technical = f"channel:{config.channels['technical']}"
    agents = config.agent_names
    requester = Requester(kind="person", name="bench", front_end="api", level=AccessLevel.OPERATOR)
    async with fleet_process(config, token, bench.workdir):
        settings = bench_settings(bench.workdir / "throughput.db", token)
        async with open_services(settings, config) as services:
            service = services.delegation

            async def delegate(i: int) -> str:
                result = await service.delegate(requester, agents[i % len(agents)], f"bench delegation {i}")
                assert result.delegation is not None
                return result.delegation.status

            await _gather(delegate, WARMUP, CONCURRENCY)  # connections open, readiness known
            started = time.perf_counter()
            statuses = await _gather(delegate, COUNT, CONCURRENCY)
            service_s = time.perf_counter() - started
            accepted = statuses.count("accepted")
            rows = await services.store.fetchone("SELECT count(*) FROM delegations WHERE status = 'accepted'")
            stored = int(rows[0]) if rows else 0

        bare_s = await _bare_loop(config, token, technical, "aiohttp")
        httpx_s = await _bare_loop(config, token, technical, "httpx")
        curl_s, curl_ok = await _curl(config, token, technical, bench.workdir)
        script_s, script_ok = await _old_script(config, token, technical, bench.workdir)

    service_rate = COUNT / service_s
    bare_rate = COUNT / bare_s
    httpx_rate = COUNT / httpx_s
    curl_rate = CURL_SAMPLE / curl_s
    script_rate = CURL_SAMPLE / script_s
    ok = accepted == COUNT and stored == COUNT + WARMUP and curl_ok and script_ok
    vs_script = service_rate / script_rate
    vs_curl = service_rate / curl_rate
    bench.add(
        Result(
            "delegate_throughput",
            service_rate,
            "deleg/s",
            script_rate,
            vs_script,
            f">= {FLOOR_RATE:,.0f}/s",
            ok and service_rate >= FLOOR_RATE,
            f"{COUNT} delegations, {CONCURRENCY} in flight: {accepted} accepted, {stored} accepted rows in SQLite "
            f"(with the warm-up); baseline: the old way (below)",
        )
    )
    bench.add(
        Result(
            "delegate_throughput_vs_curl",
            service_rate,
            "deleg/s",
            script_rate,
            vs_script,
            f"ratio >= {FLOOR_VS_CURL:g}",
            ok and vs_script >= FLOOR_VS_CURL,
            f"baseline: the old way, one run of the old delegate.sh per delegation, one after another (bash, "
            f"port from its hard-coded map, a curl to check the agent runs, a curl to POST the hook; "
            f"{CURL_SAMPLE} timed: {script_s / CURL_SAMPLE * 1000:.1f} ms each, "
            f"{'all' if script_ok else 'NOT all'} accepted)",
        )
    )
    bench.add(
        Result(
            "delegate_throughput_vs_bare_curl",
            service_rate,
            "deleg/s",
            curl_rate,
            vs_curl,
            "report only",
            ok,
            f"baseline: only the POST of the old way, one curl per delegation from one long-lived bash, one "
            f"after another ({CURL_SAMPLE} timed: {curl_s / CURL_SAMPLE * 1000:.1f} ms each, "
            f"{'all' if curl_ok else 'NOT all'} 200); 30 times this would be more than half of what the bare "
            "aiohttp client does with no records at all (below)",
        )
    )
    bench.add(
        Result(
            "delegate_throughput_vs_httpx",
            service_rate,
            "deleg/s",
            httpx_rate,
            service_rate / httpx_rate,
            f"ratio >= {FLOOR_VS_HTTPX:g}",
            ok and service_rate >= FLOOR_VS_HTTPX * httpx_rate,
            f"baseline: the same {COUNT} hook POSTs from a bare httpx AsyncClient, {HTTPX_CONCURRENCY} in flight "
            "(its best; at 64 it manages ~400/s), no persistence and no checks",
        )
    )
    bench.add(
        Result(
            "delegate_throughput_vs_bare_client",
            service_rate,
            "deleg/s",
            bare_rate,
            service_rate / bare_rate,
            "report only",
            ok,
            f"baseline: the same {COUNT} hook POSTs from the service's own aiohttp client, {CONCURRENCY} in "
            "flight, no persistence and no checks: what the checks and the records cost",
        )
    )


async def _gather(work: Callable[[int], Awaitable[T]], count: int, concurrency: int) -> list[T]:
    """`work(0)` … `work(count - 1)`, at most `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> T:
        async with gate:
            return await work(i)

    return await asyncio.gather(*(one(i) for i in range(count)))


async def _bare_loop(config: ClusterConfig, token: str, target: str, client: str) -> float:
    """The same hook POSTs the service sends, with nothing around them: no checks, no records.

    `aiohttp`: from the client the service runs on, as many in flight as the service has. `httpx`: from
    an httpx AsyncClient at its best concurrency (8 in flight; at 64 its pool manages a fifth of that).
    """
    agents = config.agents
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(i: int) -> tuple[str, bytes, dict[str, str]]:
        agent = agents[i % len(agents)]
        body = {"message": f"bare {i}", "name": f"bench {i}", "deliver": True, "channel": "discord", "to": target}
        key = f"bare-{client}-{i}-{time.perf_counter_ns()}"
        return f"{agent.base_url}/hooks/agent", encode_body(body), {**headers, "Idempotency-Key": key}

    def check(status: int, body: bytes) -> None:
        if status != 200 or not json.loads(body).get("runId"):
            raise RuntimeError(f"a bare {client} POST answered {status}")

    if client == "aiohttp":
        async with GatewayClient.make_http_client(config.gateway) as session:

            async def post(i: int) -> None:
                url, content, hdrs = request(i)
                async with session.post(url, data=content, headers=hdrs) as response:
                    check(response.status, await response.read())

            return await _timed(post, CONCURRENCY)

    async with httpx.AsyncClient(trust_env=False, timeout=config.gateway.read_timeout) as http:

        async def post_httpx(i: int) -> None:
            url, content, hdrs = request(i)
            response = await http.post(url, content=content, headers=hdrs)
            check(response.status_code, response.content)

        return await _timed(post_httpx, HTTPX_CONCURRENCY)


async def _timed(post: Callable[[int], Awaitable[None]], concurrency: int) -> float:
    """Seconds for COUNT posts, after a warm-up that opens the connections."""
    await _gather(post, WARMUP, concurrency)
    started = time.perf_counter()
    await _gather(post, COUNT, concurrency)
    return time.perf_counter() - started


async def _old_script(config: ClusterConfig, token: str, target: str, workdir: Path) -> tuple[float, bool]:
    """The old way: the old delegate.sh run once per delegation, one run after another."""
    if shutil.which("curl") is None or shutil.which("bash") is None:
        raise RuntimeError("curl and bash are needed to measure the old way")
    ports = " ".join(f"[{agent.name}]={agent.port}" for agent in config.agents)
    script = workdir / "old-delegate.sh"
    script.write_text(OLD_DELEGATE_SH.replace("@PORTS@", ports).replace("@TO@", target.split(":", 1)[1]))
    (workdir / "old-token").write_text(token)
    agents = config.agent_names
    runs = "".join(f"{agents[i % len(agents)]}\tOld delegation {i}\n" for i in range(CURL_SAMPLE))
    (workdir / "old-runs").write_text(runs)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOOKS_TOKEN_FILE": str(workdir / "old-token")}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", OLD_WAY_LOOP, "old-way", str(workdir), env=env, stdout=asyncio.subprocess.DEVNULL
    )
    ok = await process.wait() == 0
    return time.perf_counter() - started, ok


async def _curl(config: ClusterConfig, token: str, target: str, workdir: Path) -> tuple[float, bool]:
    """Only the POST of the old way: bash runs one curl per delegation, one after another."""
    if shutil.which("curl") is None or shutil.which("bash") is None:
        raise RuntimeError("curl and bash are needed to measure the old way")
    _curl_files(config, token, target, workdir)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec("bash", "-c", CURL_LOOP, "curl-loop", str(workdir))
    ok = await process.wait() == 0
    return time.perf_counter() - started, ok


def _curl_files(config: ClusterConfig, token: str, target: str, workdir: Path) -> None:
    """The old payloads, one file each, a list of (gateway URL, payload file), and the bearer header."""
    agents = config.agents
    lines = []
    for i in range(CURL_SAMPLE):
        body = workdir / f"curl-{i}.json"
        body.write_text(json.dumps({"message": f"curl {i}", "deliver": True, "channel": "discord", "to": target}))
        lines.append(f"{agents[i % len(agents)].base_url}/hooks/agent {body}")
    (workdir / "curl-list").write_text("\n".join(lines) + "\n")
    (workdir / "curl-headers").write_text(f"Authorization: Bearer {token}\n")  # out of argv, as delegate.sh does


# The team's old script, as overview.md describes it: "looks the port up in a hard-coded map, checks the
# agent runs, POSTs to /hooks/agent with the shared bearer token". Its payload is brought up to what the
# current gateways accept (channel with a `to`; the original's channel alone is refused with 400).
OLD_DELEGATE_SH = r"""#!/usr/bin/env bash
set -euo pipefail
declare -A PORTS=(@PORTS@)
agent=${1:?usage: delegate.sh <agent> "<instruction>" [--channel <id>] [--deliver|--no-deliver]}
message=${2:?instruction required}
shift 2
channel=@TO@ deliver=true
while (($#)); do
  case $1 in
    --channel) channel=$2; shift 2 ;;
    --deliver) deliver=true; shift ;;
    --no-deliver) deliver=false; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
port=${PORTS[$agent]:-}
[[ -n $port ]] || { echo "unknown agent: $agent" >&2; exit 1; }
curl --silent --fail --output /dev/null --max-time 5 "http://127.0.0.1:$port/healthz" \
  || { echo "$agent is not running (port $port)" >&2; exit 1; }
message=${message//\\/\\\\}; message=${message//\"/\\\"}
body=$(printf '{"message":"%s","deliver":%s,"channel":"discord","to":"channel:%s"}' "$message" "$deliver" "$channel")
curl --silent --show-error --fail --max-time 30 -X POST "http://127.0.0.1:$port/hooks/agent" \
  -H "Authorization: Bearer $(<"$HOOKS_TOKEN_FILE")" -H 'Content-Type: application/json' -d "$body"
echo
"""

OLD_WAY_LOOP = r"""
set -u
dir=$1 fail=0
while IFS=$'\t' read -r agent message; do
  bash "$dir/old-delegate.sh" "$agent" "$message" || fail=1
done < "$dir/old-runs"
exit $fail
"""

CURL_LOOP = r"""
set -u
dir=$1 fail=0
while read -r url body; do
  code=$(curl --silent --output /dev/null --write-out '%{http_code}' --header @"$dir/curl-headers" \
    --header 'Content-Type: application/json' --data-binary @"$body" "$url")
  [[ $code == 200 ]] || fail=1
done < "$dir/curl-list"
exit $fail
"""
