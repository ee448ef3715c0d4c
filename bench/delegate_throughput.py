"""delegate_throughput: 2,000 delegations through the core service, against two baselines of the same run.

- the service: `DelegationService.delegate` (authority check, SQLite record, HTTP to the agent, status
  update), 64 in flight, on a real database file, against 8 simulated gateways in another process;
- the old way: one `curl` process per delegation, one after another, with the old delegate.sh's
  payload and bearer straight to the gateway (a sample of 100; the rate is extrapolated);
- a bare httpx loop: the same POSTs from one AsyncClient, 64 in flight, no persistence and no checks.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bench.common import Bench, Result, bench_settings, fleet_config, fleet_process, new_token
from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig
from bot.gateway import GatewayClient, encode_body
from bot.services import open_services
from bot.simulator import free_ports

COUNT = 2_000
CONCURRENCY = 64
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

        bare_s = await _bare_httpx(config, token, technical)
        curl_s, curl_ok = await _curl(config, token, technical, bench.workdir)

    service_rate = COUNT / service_s
    bare_rate = COUNT / bare_s
    curl_rate = CURL_SAMPLE / curl_s
    ok = accepted == COUNT and stored == COUNT + WARMUP and curl_ok
    vs_curl = service_rate / curl_rate
    bench.add(
        Result(
            "delegate_throughput",
            service_rate,
            "deleg/s",
            curl_rate,
            vs_curl,
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
            curl_rate,
            vs_curl,
            f"ratio >= {FLOOR_VS_CURL:g}",
            ok and vs_curl >= FLOOR_VS_CURL,
            f"baseline: bash running one curl per delegation straight to the gateway, one after another "
            f"({CURL_SAMPLE} timed: {curl_s / CURL_SAMPLE * 1000:.1f} ms each, {'all' if curl_ok else 'NOT all'} 200)",
        )
    )
    bench.add(
        Result(
            "delegate_throughput_vs_httpx",
            service_rate,
            "deleg/s",
            bare_rate,
            service_rate / bare_rate,
            f"ratio >= {FLOOR_VS_HTTPX:g}",
            ok and service_rate >= FLOOR_VS_HTTPX * bare_rate,
            f"baseline: the same {COUNT} hook POSTs from one httpx AsyncClient (as the service makes it), "
            f"{CONCURRENCY} in flight, no persistence and no checks",
        )
    )


async def _gather(work: Callable[[int], Awaitable[T]], count: int, concurrency: int) -> list[T]:
    """`work(0)` … `work(count - 1)`, at most `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> T:
        async with gate:
            return await work(i)

    return await asyncio.gather(*(one(i) for i in range(count)))


async def _bare_httpx(config: ClusterConfig, token: str, target: str) -> float:
    """The same hook POSTs the service sends, from the same kind of client, with nothing around them."""
    agents = config.agents
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async with GatewayClient.make_http_client(config.gateway) as http:

        async def post(i: int) -> None:
            agent = agents[i % len(agents)]
            body = {"message": f"bare {i}", "name": f"bench {i}", "deliver": True, "channel": "discord", "to": target}
            response = await http.post(
                f"{agent.base_url}/hooks/agent",
                content=encode_body(body),
                headers={**headers, "Idempotency-Key": f"bare-{i}-{time.perf_counter_ns()}"},
            )
            if response.status_code != 200 or not response.json().get("runId"):
                raise RuntimeError(f"bare httpx POST answered {response.status_code}")

        await _gather(post, WARMUP, CONCURRENCY)
        started = time.perf_counter()
        await _gather(post, COUNT, CONCURRENCY)
        return time.perf_counter() - started


async def _curl(config: ClusterConfig, token: str, target: str, workdir: Path) -> tuple[float, bool]:
    """The old delegate.sh: bash runs one curl per delegation, straight to the gateway, one after another."""
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
