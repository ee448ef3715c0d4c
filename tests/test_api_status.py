"""GET /v1/status and /v1/status/{agent}: a real server on 127.0.0.1 over real services and a simulated fleet."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bot.api import LoopbackApi
from bot.authz import AccessLevel, Requester
from bot.config import parse_cluster_config
from bot.services import Services, open_services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY, SimulatedFleet
from bot.status_view import fleet_json
from tests.conftest import FleetStarter
from tests.test_api import assert_error
from tests.test_api_delegations import auth

PROBE_TIMEOUT = 0.5  # optimizer never answers: the round must end after this, not after the default 2 s
OVERVIEW_KEYS = {"since", "uptime_24h", "last_delegation", "silenced_until"}


@dataclass
class Hq:
    api: LoopbackApi
    services: Services
    fleet: SimulatedFleet
    client: httpx.AsyncClient

    async def get(self, path: str, identity: str = "nx-expert") -> httpx.Response:
        return await self.client.get(path, headers=auth(identity))


@pytest.fixture
async def hq(start_fleet: FleetStarter, settings: Settings) -> AsyncIterator[Hq]:
    """The 14:00 fleet: webster on the legacy release, auditor down, optimizer wedged, study-builder starting."""
    config, fleet = await start_fleet(
        release={"webster": RELEASE_LEGACY},
        specs={"auditor": {"down": True}, "optimizer": {"hang": True}, "study-builder": {"startup": None}},
    )
    raw = config.model_dump(mode="python") | {
        "gateway": {**config.gateway.model_dump(), "probe_timeout": PROBE_TIMEOUT}
    }
    config = parse_cluster_config(raw, "test-config")
    async with open_services(settings, config) as services:
        api = LoopbackApi(services, settings.api_identities([*config.agent_names, *HUMAN_IDENTITIES]))
        await api.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient(base_url=api.url, timeout=10, trust_env=False) as client:
                yield Hq(api, services, fleet, client)
        finally:
            await api.stop()


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agent["name"]: agent for agent in body["agents"]}


async def test_status_reports_every_agent_of_a_mixed_fleet(hq: Hq) -> None:
    operator = Requester(kind="person", name="Antoine", front_end="api", level=AccessLevel.OPERATOR)
    await hq.services.delegation.delegate(operator, "nx-expert", "Mesh the M2 mirror")
    await hq.services.monitor.probe_round()  # history, so `since` and uptime have something to say

    started = time.perf_counter()
    response = await hq.get("/v1/status")  # an agent's token: any authenticated caller may look
    took = time.perf_counter() - started

    assert response.status_code == 200, response.text
    body = response.json()
    agents = by_name(body)
    assert list(agents) == hq.services.config.agent_names
    assert {name: agent["state"] for name, agent in agents.items()} == {
        "manager": "ready", "tech-lead": "ready", "secretary": "ready", "auditor": "down",
        "optimizer": "down", "study-builder": "starting", "nx-expert": "ready", "webster": "ready",
    }  # fmt: skip
    assert body["counts"] == {"ready": 5, "starting": 1, "degraded": 0, "down": 2, "foreign": 0}
    assert took < PROBE_TIMEOUT + 1.5 and body["took_ms"] < (PROBE_TIMEOUT + 1.0) * 1000  # the wedged one waited alone
    assert (agents["manager"]["release"], agents["manager"]["health_routes"]) == (RELEASE_CURRENT, True)
    assert (agents["webster"]["release"], agents["webster"]["health_routes"]) == (None, False)
    assert "connection refused" in agents["auditor"]["detail"] and agents["auditor"]["latency_ms"] is None
    assert f"no answer within {PROBE_TIMEOUT:g} s" in agents["optimizer"]["detail"]
    assert agents["nx-expert"]["last_delegation"].startswith("D-1 accepted ")
    assert agents["webster"]["last_delegation"] is None
    for agent in agents.values():
        assert agent["since"] is not None and agent["silenced_until"] is None
        assert agent["uptime_24h"] == (0.0 if agent["state"] in ("down", "starting") else 1.0)
        assert agent["port"] == hq.services.config.require_agent(agent["name"]).port


async def test_status_has_the_cli_json_shape_plus_the_overview(hq: Hq) -> None:
    body = (await hq.get("/v1/status", identity="operator")).json()
    cli = fleet_json(await hq.services.cluster.probe_all())

    assert set(body) == set(cli)
    assert set(body["agents"][0]) == set(cli["agents"][0]) | OVERVIEW_KEYS
    # Nothing recorded the API's probes: polling agents do not count as the monitor's rounds.
    assert all(agent["since"] is None and agent["uptime_24h"] is None for agent in body["agents"])
    assert await hq.services.monitor.health("auditor") is None


async def test_one_agent_with_its_recent_transitions(hq: Hq) -> None:
    await hq.services.monitor.probe_round()
    await hq.fleet.take_down("webster")
    await hq.services.monitor.probe_round()

    response = await hq.get("/v1/status/webster", identity="manager")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["state"]) == ("webster", "down")
    assert [(t["from_state"], t["to_state"]) for t in body["transitions"]] == [("ready", "down"), (None, "ready")]
    assert body["confirmed"] == "up"  # one failed probe is not a confirmed transition (K = 2)
    assert body["uptime_7d"] is not None and body["uptime_24h"] is not None
    assert set(body) >= OVERVIEW_KEYS | {"transitions", "uptime_7d", "confirmed", "confirmed_since", "silenced_by"}


async def test_an_unknown_agent_is_404(hq: Hq) -> None:
    detail = assert_error(await hq.get("/v1/status/webstr"), 404, "unknown_agent")
    assert "Did you mean 'webster'?" in detail


async def test_status_needs_a_token(hq: Hq) -> None:
    assert_error(await hq.client.get("/v1/status"), 401, "unauthorized")
    assert_error(await hq.client.get("/v1/status/webster"), 401, "unauthorized")
    bad = {"Authorization": "Bearer not-a-token"}
    assert_error(await hq.client.get("/v1/status", headers=bad), 401, "unauthorized")


async def test_the_status_routes_are_in_the_openapi_document(hq: Hq) -> None:
    document = (await hq.client.get("/openapi.json")).json()

    fleet = document["paths"]["/v1/status"]["get"]
    one = document["paths"]["/v1/status/{agent}"]["get"]
    assert fleet["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FleetStatusOut"
    }
    assert set(fleet["responses"]) >= {"200", "401"} and set(one["responses"]) >= {"200", "401", "404"}
    assert one["parameters"] == [{"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}]
    schemas = document["components"]["schemas"]
    assert {"FleetStatusOut", "AgentStatusOut", "AgentStatusDetail", "TransitionOut"} <= set(schemas)
    assert set(schemas["AgentStatusOut"]["properties"]) >= OVERVIEW_KEYS | {"name", "state", "latency_ms"}
