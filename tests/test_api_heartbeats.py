"""The heartbeat routes of the loopback API: a real server on 127.0.0.1 over real services and a simulated fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.api import LoopbackApi
from bot.heartbeat import FOREVER
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import SimulatedFleet
from tests.conftest import API_TOKENS, ServicesOnFleet
from tests.test_api import assert_error

ADMIN_TOKEN = "api-SECRET-admin-9f8e7d6c5b4a3"
TOKENS = {**API_TOKENS, "admin": ADMIN_TOKEN}
STANDUP_TARGET = "channel:100000000000000103"


@dataclass
class Hq:
    api: LoopbackApi
    services: Services
    fleet: SimulatedFleet
    client: httpx.AsyncClient

    async def post(self, path: str, identity: str, json: Any = None) -> httpx.Response:
        return await self.client.post(path, headers=auth(identity), json=json)

    async def listing(self, identity: str = "nx-expert") -> dict[str, dict[str, Any]]:
        response = await self.client.get("/v1/heartbeats", headers=auth(identity))
        assert response.status_code == 200, response.text
        return {job["agent"]: job for job in response.json()["heartbeats"]}

    async def state(self, agent: str) -> Any:
        return await self.services.store.fetchone("SELECT * FROM heartbeat_state WHERE agent = ?", (agent,))


def auth(identity: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[identity]}"}


@pytest.fixture
async def hq(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[Hq]:
    services, fleet = await services_on_fleet(specs={"webster": {"model_ok": False}})
    identities = settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES])
    api = LoopbackApi(services, {**identities, "admin": SecretStr(ADMIN_TOKEN)})
    await api.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10, trust_env=False) as client:
            yield Hq(api, services, fleet, client)
    finally:
        await api.stop()


# --- listing -----------------------------------------------------------------------------------------


async def test_any_caller_lists_the_heartbeats_atomizer_hq_sends(hq: Hq) -> None:
    jobs = await hq.listing("nx-expert")
    assert list(jobs) == ["manager", "webster"]
    manager = jobs["manager"]
    assert manager["schedule"] == "every 30 min 00 s"
    assert (manager["method"], manager["missed"], manager["failures"]) == ("agent", "skip", 0)
    assert manager["next_slot"] and manager["last"] is None and manager["paused_until"] is None
    assert_error(await hq.client.get("/v1/heartbeats"), 401, "unauthorized")


# --- running one now ---------------------------------------------------------------------------------


async def test_an_operator_runs_a_heartbeat_and_gets_the_verified_run(hq: Hq) -> None:
    response = await hq.post("/v1/heartbeats/manager/run", "operator")
    assert response.status_code == 200, response.text
    run = response.json()
    assert (run["agent"], run["trigger"], run["status"], run["level"]) == ("manager", "manual", "ok", "completed")
    assert run["run_id"] and run["failed"] is False and run["finished_at"]
    [hook] = hq.fleet.received("manager")
    assert (hook.body["channel"], hook.body["to"]) == ("discord", STANDUP_TARGET)
    assert hook.idempotency_key == f"heartbeat:manager:{run['slot']}"
    assert (await hq.listing())["manager"]["last"] == run


async def test_a_failed_run_is_answered_200_with_what_failed(hq: Hq) -> None:
    response = await hq.post("/v1/heartbeats/webster/run", "admin")
    assert response.status_code == 200, response.text
    run = response.json()
    assert (run["status"], run["level"], run["failed"]) == ("run_failed", "accepted", True)
    assert run["detail"].startswith("hook accepted, run failed")
    assert (await hq.listing())["webster"]["failures"] == 1


@pytest.mark.parametrize("agent_token", ["manager", "tech-lead"])
async def test_agents_may_not_run_heartbeats_not_even_their_own(hq: Hq, agent_token: str) -> None:
    detail = assert_error(await hq.post("/v1/heartbeats/manager/run", agent_token), 403, "forbidden")
    assert "needs the operator level" in detail
    assert hq.fleet.received() == []


async def test_running_a_heartbeat_that_is_not_sent_or_of_no_agent(hq: Hq) -> None:
    detail = assert_error(await hq.post("/v1/heartbeats/tech-lead/run", "operator"), 400, "invalid_input")
    assert "atomizer-hq sends no heartbeat for tech-lead" in detail
    assert_error(await hq.post("/v1/heartbeats/ghost/run", "operator"), 404, "unknown_agent")


# --- pause and resume --------------------------------------------------------------------------------


async def test_the_admin_pauses_for_a_while_and_resumes(hq: Hq) -> None:
    response = await hq.post("/v1/heartbeats/webster/pause", "admin", {"duration": "2h"})
    assert response.status_code == 200, response.text
    until = response.json()["paused_until"]
    assert response.json()["agent"] == "webster" and until != FOREVER
    assert (await hq.listing())["webster"]["paused_until"] == until
    assert (await hq.state("webster"))["paused_by"] == "admin"

    resumed = await hq.post("/v1/heartbeats/webster/resume", "admin")
    assert resumed.status_code == 200
    assert resumed.json() == {"agent": "webster", "paused_until": None, "changed": True}
    assert (await hq.listing())["webster"]["paused_until"] is None


async def test_a_pause_without_duration_lasts_until_resumed(hq: Hq) -> None:
    response = await hq.post("/v1/heartbeats/manager/pause", "admin", {})
    assert response.status_code == 200 and response.json()["paused_until"] == FOREVER


@pytest.mark.parametrize(
    ("body", "why"),
    [({"duration": "30"}, "has no unit"), ({"duration": "0"}, "no pause"), ({"for": "2h"}, "for")],
)
async def test_a_bad_pause_is_refused(hq: Hq, body: dict[str, str], why: str) -> None:
    detail = assert_error(await hq.post("/v1/heartbeats/manager/pause", "admin", body), 400, "invalid_input")
    assert why in detail
    assert await hq.state("manager") is None


@pytest.mark.parametrize(("identity", "action"), [("operator", "pause"), ("manager", "pause"), ("operator", "resume")])
async def test_pause_and_resume_need_the_admin(hq: Hq, identity: str, action: str) -> None:
    body = {} if action == "pause" else None
    detail = assert_error(await hq.post(f"/v1/heartbeats/manager/{action}", identity, body), 403, "forbidden")
    assert "admin level" in detail


# --- seen: an agent's own heartbeat ------------------------------------------------------------------


async def test_an_agent_reports_its_own_heartbeat(hq: Hq) -> None:
    response = await hq.post("/v1/heartbeats/tech-lead/seen", "tech-lead")
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["agent"] == "tech-lead"
    assert (await hq.state("tech-lead"))["last_seen_at"] == seen["seen_at"]


async def test_an_agent_may_not_report_another_agents_heartbeat(hq: Hq) -> None:
    detail = assert_error(await hq.post("/v1/heartbeats/webster/seen", "manager"), 403, "forbidden")
    assert "may report only its own heartbeat" in detail and "/v1/heartbeats/manager/seen" in detail
    assert await hq.state("webster") is None


async def test_an_operator_may_report_any_agents_heartbeat(hq: Hq) -> None:
    response = await hq.post("/v1/heartbeats/webster/seen", "operator")
    assert response.status_code == 200 and (await hq.state("webster"))["last_seen_at"]
    assert_error(await hq.post("/v1/heartbeats/ghost/seen", "operator"), 404, "unknown_agent")


async def test_a_missing_agent_reporting_again_is_announced_back(hq: Hq) -> None:
    await hq.services.store.execute("INSERT INTO heartbeat_state (agent, seen_alerted) VALUES ('tech-lead', 1)")
    assert (await hq.post("/v1/heartbeats/tech-lead/seen", "tech-lead")).status_code == 200
    [alert] = await hq.services.store.fetchall("SELECT kind FROM alerts")
    assert alert["kind"] == "heartbeat_recovered"


# --- the document ------------------------------------------------------------------------------------


async def test_openapi_documents_the_heartbeat_routes(hq: Hq) -> None:
    doc = (await hq.client.get("/openapi.json")).json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    assert {"HeartbeatList", "HeartbeatJobOut", "HeartbeatRunOut", "HeartbeatPauseIn", "HeartbeatSeen"} <= set(schemas)
    assert set(paths["/v1/heartbeats"]) == {"get"}
    run = paths["/v1/heartbeats/{agent}/run"]["post"]
    assert run["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HeartbeatRunOut"
    }
    assert set(run["responses"]) >= {"200", "400", "401", "403", "404"}
    assert "even for their own heartbeat" in run["description"]
    assert [p["name"] for p in run["parameters"]] == ["agent"]
    for action in ("pause", "resume", "seen"):
        assert "post" in paths[f"/v1/heartbeats/{{agent}}/{action}"]
    pause = paths["/v1/heartbeats/{agent}/pause"]["post"]
    assert pause["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HeartbeatPauseIn"
    }
    listed = (await hq.post("/v1/heartbeats/manager/run", "operator")).json()
    assert set(schemas["HeartbeatRunOut"]["properties"]) == set(listed)


async def test_pausing_what_is_paused_or_resuming_what_runs_is_200_and_records_nothing(hq: Hq) -> None:
    resumed = await hq.post("/v1/heartbeats/webster/resume", "admin")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json() == {"agent": "webster", "paused_until": None, "changed": False}

    first = await hq.post("/v1/heartbeats/webster/pause", "admin", {})
    before = dict(await hq.state("webster"))
    again = await hq.post("/v1/heartbeats/webster/pause", "admin", {"duration": "2h"})  # within the pause in force
    assert again.status_code == 200, again.text
    assert again.json() == {"agent": "webster", "paused_until": FOREVER, "changed": False}
    assert first.json()["changed"] is True and dict(await hq.state("webster")) == before
