"""interaction_ack: from an interaction reaching the bot to its initial response (the defer), under load.

The real bot (discord.py's interaction pipeline, the cogs, the services) on dpytest's fake Discord
(tests/discord_harness.py), 500 `/delegate` interactions arriving in waves while every agent takes 5 s
to admit a hook, so the delegations already deferred pile up in flight as later interactions arrive.
Timed from handing the INTERACTION_CREATE payload to discord.py's parser to the defer callback's
request leaving the bot.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import discord
from discord.webhook.async_ import AsyncWebhookAdapter

from bench.common import (
    Bench,
    Result,
    bench_settings,
    fleet_config,
    fleet_process,
    median,
    new_token,
    percentile,
)
from bot.authz import AccessLevel
from bot.runner import settle_heap
from bot.services import open_services
from bot.simulator import free_ports
from tests.discord_harness import (
    INVOKER_TASK,
    RecordedCall,
    SlashDriver,
    _fake_response,
    close_test_bot,
    give_level,
    make_member,
    make_test_bot,
)

COUNT = 500
WAVES = 20  # 25 interactions at once, every 250 ms: 500 over 5 s
WAVE_GAP_S = 0.25
AGENT_LATENCY_MS = 5_000.0
FLOOR_P99_MS = 50.0
DEFERRED = 5  # callback type: DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE


async def run(bench: Bench) -> None:
    config = fleet_config(free_ports(9))
    token = new_token("hooks")
    arrived: dict[str, float] = {}
    acked: dict[str, tuple[float, int | None]] = {}
    followups = 0

    async def request(
        adapter: AsyncWebhookAdapter,
        route: discord.http.Route,
        session: Any = None,
        *,
        payload: dict[str, Any] | None = None,
        multipart: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        nonlocal followups
        now = time.perf_counter()
        if payload is None and multipart:
            payload = next((json.loads(p["value"]) for p in multipart if p.get("name") == "payload_json"), None)
        call = RecordedCall(route.method, route.path, route.url, payload, params)
        parts = route.url.split("/")
        interaction_id = parts[parts.index("interactions") + 1] if "interactions" in parts else "0"
        if call.is_callback:
            acked.setdefault(interaction_id, (now, call.type))
        else:
            followups += 1
        return _fake_response(call, interaction_id, "0", None)

    async with fleet_process(config, token, bench.workdir, common={"latency_ms": AGENT_LATENCY_MS}):
        async with open_services(bench_settings(bench.workdir / "ack.db", token), config) as services:
            bot = await make_test_bot(services)
            settle_heap()  # as run_service does once it is up, before the bot connects
            original = AsyncWebhookAdapter.request
            AsyncWebhookAdapter.request = request  # type: ignore[method-assign,assignment]
            try:
                member = give_level(make_member(bot, "antoine"), AccessLevel.OPERATOR, config)
                driver = SlashDriver(bot)
                agents = config.agent_names
                payloads = [
                    driver.build_payload(
                        2,
                        "delegate",
                        user=member,
                        options={"agent": agents[i % len(agents)], "instruction": f"bench interaction {i}"},
                    )
                    for i in range(COUNT)
                ]
                before = {t for t in asyncio.all_tasks() if t.get_name() == INVOKER_TASK}
                per_wave = COUNT // WAVES
                started = time.perf_counter()
                for wave in range(WAVES):
                    await _sleep_until(started + wave * WAVE_GAP_S)
                    for payload in payloads[wave * per_wave : (wave + 1) * per_wave]:
                        arrived[payload["id"]] = time.perf_counter()
                        bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
                    await asyncio.sleep(0)
                invokers = [t for t in asyncio.all_tasks() if t.get_name() == INVOKER_TASK and t not in before]
                await asyncio.wait_for(asyncio.gather(*invokers, return_exceptions=True), 60)
                statuses = await services.store.fetchall(
                    "SELECT status, count(*) AS n FROM delegations GROUP BY status"
                )
            finally:
                AsyncWebhookAdapter.request = original  # type: ignore[method-assign]
                await close_test_bot(bot)

    latencies = [(acked[i][0] - t0) * 1000 for i, t0 in arrived.items() if i in acked and acked[i][1] == DEFERRED]
    p99 = percentile(latencies, 99) if latencies else float("inf")
    by_status = ", ".join(f"{row['n']} {row['status']}" for row in statuses)
    bench.add(
        Result(
            "interaction_ack",
            p99,
            "ms (p99)",
            AGENT_LATENCY_MS,
            p99 / AGENT_LATENCY_MS,
            f"p99 <= {FLOOR_P99_MS:g} ms",
            len(latencies) == COUNT and p99 <= FLOOR_P99_MS,
            f"{COUNT} /delegate interactions in {WAVES} waves over {WAVES * WAVE_GAP_S:g} s, agents admitting in "
            f"{AGENT_LATENCY_MS / 1000:g} s; {len(latencies)} deferred; p50 {median(latencies):.1f} ms, "
            f"max {max(latencies):.1f} ms; {followups} followups; delegations: {by_status}; "
            "baseline: the agent's answer time (what answering after the work would take)",
        )
    )


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
