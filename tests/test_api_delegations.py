"""The delegation routes of the loopback API: a real server on 127.0.0.1 over real services and a simulated fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bot.api import LoopbackApi
from bot.authz import AccessLevel, Requester
from bot.config import HOOK_BODY_LIMIT
from bot.delegation import chain_footer
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import SimulatedFleet
from tests.conftest import API_TOKENS, ServicesOnFleet
from tests.test_api import assert_error

TECHNICAL = "channel:100000000000000101"  # channels.technical in the shipped config: the default target
OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)


@dataclass
class Hq:
    """atomizer-hq's API over a simulated fleet, and a client that calls it as any identity."""

    api: LoopbackApi
    services: Services
    fleet: SimulatedFleet
    client: httpx.AsyncClient

    async def delegate(
        self, identity: str, to: str, message: str = "Mesh the M2 mirror", **fields: Any
    ) -> httpx.Response:
        return await self.client.post(
            "/v1/delegations", headers=auth(identity), json={"to": to, "message": message, **fields}
        )

    async def get(self, path: str, identity: str = "manager", **params: Any) -> httpx.Response:
        return await self.client.get(path, headers=auth(identity), params=params)

    async def stored(self) -> list[dict[str, Any]]:
        return [delegation.to_dict() for delegation in await self.services.delegation.recent(limit=100)]

    async def audit(self) -> list[tuple[str, str, str]]:
        rows = await self.services.store.fetchall("SELECT actor, subject, decision FROM audit_log ORDER BY id")
        return [tuple(row) for row in rows]


def auth(identity: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKENS[identity]}"}


@pytest.fixture
async def hq(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[Hq]:
    services, fleet = await services_on_fleet()
    api = LoopbackApi(services, settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES]))
    await api.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10, trust_env=False) as client:
            yield Hq(api, services, fleet, client)
    finally:
        await api.stop()


# --- who may delegate to whom ------------------------------------------------------------------


async def test_manager_delegates_to_nx_expert(hq: Hq) -> None:
    response = await hq.delegate("manager", "nx-expert")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert body["run_id"]
    assert body["agent"] == "nx-expert"
    assert body["requester"] == {"kind": "agent", "name": "manager", "via": None}
    assert body["front_end"] == "api"
    assert body["target"] == TECHNICAL
    assert body["decision"]["allowed"] is True
    assert "manager may delegate to nx-expert" in body["decision"]["reason"]
    assert response.headers["Location"] == f"/v1/delegations/{body['id']}"

    [hook] = hq.fleet.received()
    assert hook.agent == "nx-expert" and hook.path == "/hooks/agent"
    assert hook.run_id == body["run_id"]
    assert hook.idempotency_key
    assert hook.body["message"] == "Mesh the M2 mirror" + chain_footer(body["id"])
    assert hook.body["deliver"] is True
    assert hook.body["channel"] == "discord"
    assert hook.body["to"] == TECHNICAL


@pytest.mark.parametrize(
    ("target", "normalized"),
    [
        ("<#100000000000000102>", "channel:100000000000000102"),
        ("#task-board", "channel:100000000000000102"),
        ("  channel:100000000000000999 ", "channel:100000000000000999"),
        ("@nx-expert", "user:100000000000000307"),
    ],
)
async def test_the_target_reaches_the_agent_normalized(hq: Hq, target: str, normalized: str) -> None:
    response = await hq.delegate("manager", "webster", target=target)
    assert response.status_code == 202, response.text
    assert response.json()["target"] == normalized
    [hook] = hq.fleet.received("webster")
    assert (hook.body["channel"], hook.body["to"]) == ("discord", normalized)


async def test_tech_lead_may_not_delegate_to_manager(hq: Hq) -> None:
    response = await hq.delegate("tech-lead", "manager", "Approve the budget")
    detail = assert_error(response, 403, "forbidden")
    assert detail.startswith("tech-lead may not delegate to manager")
    assert "Who could: manager itself (taking it on directly)" in detail  # no agent may delegate to manager
    assert "a person with the operator or admin role" in detail
    assert hq.fleet.received() == []
    assert await hq.stored() == []
    assert await hq.audit() == [("tech-lead", "manager", "refused")]


async def test_tech_lead_may_delegate_to_the_others(hq: Hq) -> None:
    response = await hq.delegate("tech-lead", "optimizer")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"


@pytest.mark.parametrize("agent", ["manager", "tech-lead", "webster", "nx-expert"])
async def test_nx_expert_may_delegate_to_nobody(hq: Hq, agent: str) -> None:
    detail = assert_error(await hq.delegate("nx-expert", agent), 403, "forbidden")
    assert "nx-expert may not delegate" in detail
    assert "Who could:" in detail
    assert hq.fleet.received() == []


async def test_operator_may_delegate_to_anyone(hq: Hq) -> None:
    for agent in hq.services.config.agent_names:
        response = await hq.delegate("operator", agent)
        assert response.status_code == 202, response.text
        body = response.json()
        assert (body["agent"], body["status"]) == (agent, "accepted")
        assert body["requester"] == {"kind": "person", "name": "operator", "via": None}
        assert "operator is operator" in body["decision"]["reason"]
    assert sorted(hook.agent for hook in hq.fleet.received()) == sorted(hq.services.config.agent_names)


async def test_an_agent_that_cannot_take_it_now_is_queued(hq: Hq) -> None:
    await hq.fleet.take_down("webster")
    response = await hq.delegate("manager", "webster", "Find the CTE of Zerodur Class 0")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["last_error"] and body["next_attempt_at"]
    assert body["decision"]["allowed"] is True


async def test_a_token_is_required(hq: Hq) -> None:
    response = await hq.client.post("/v1/delegations", json={"to": "nx-expert", "message": "x"})
    assert_error(response, 401, "unauthorized")
    assert_error(await hq.client.get("/v1/delegations"), 401, "unauthorized")


# --- identity comes from the token -------------------------------------------------------------


@pytest.mark.parametrize(
    "claim",
    [
        {"requester": "operator"},
        {"requester": {"kind": "person", "name": "admin", "via": None}},
        {"as": "manager"},
        {"via": "admin"},
    ],
)
async def test_the_body_cannot_claim_an_identity(hq: Hq, claim: dict[str, Any]) -> None:
    response = await hq.delegate("tech-lead", "manager", "Approve the budget", **claim)
    detail = assert_error(response, 400, "invalid_input")
    assert f"'{next(iter(claim))}'" in detail
    assert "bearer token" in detail
    assert hq.fleet.received() == []
    assert await hq.stored() == []


async def test_unknown_body_fields_are_refused(hq: Hq) -> None:
    detail = assert_error(await hq.delegate("manager", "nx-expert", channel="123"), 400, "invalid_input")
    assert "channel: Extra inputs are not permitted" in detail


# --- validation --------------------------------------------------------------------------------


async def test_unknown_agent_is_404_with_the_closest_match(hq: Hq) -> None:
    detail = assert_error(await hq.delegate("manager", "nx-expret"), 404, "unknown_agent")
    assert "Did you mean 'nx-expert'?" in detail
    assert "Valid agents:" in detail


@pytest.mark.parametrize("message", ["", "   \n\t "])
async def test_empty_message_is_400(hq: Hq, message: str) -> None:
    detail = assert_error(await hq.delegate("manager", "nx-expert", message), 400, "invalid_input")
    assert "empty" in detail
    assert await hq.stored() == []


async def test_missing_fields_are_400(hq: Hq) -> None:
    response = await hq.client.post("/v1/delegations", headers=auth("manager"), json={"to": "nx-expert"})
    assert "message: Field required" in assert_error(response, 400, "invalid_input")


async def test_message_too_long_for_the_gateway_is_413(hq: Hq) -> None:
    response = await hq.delegate("manager", "nx-expert", "x" * HOOK_BODY_LIMIT)
    detail = assert_error(response, 413, "payload_too_large")
    assert f"{HOOK_BODY_LIMIT:,}" in detail
    assert hq.fleet.received() == []
    assert await hq.stored() == []


async def test_body_over_the_api_cap_is_413(hq: Hq) -> None:
    response = await hq.delegate("manager", "nx-expert", "x" * (hq.api.config.max_body_bytes + 1))
    assert_error(response, 413, "payload_too_large")
    assert hq.fleet.received() == []
    assert await hq.stored() == []


@pytest.mark.parametrize("target", ["12345", "<@&100000000000000201>", "#no-such-channel", "", "  "])
async def test_bad_target_is_400(hq: Hq, target: str) -> None:
    assert_error(await hq.delegate("manager", "nx-expert", target=target), 400, "invalid_target")
    assert hq.fleet.received() == []
    assert await hq.stored() == []


async def test_a_delegation_for_an_unknown_task_is_refused(hq: Hq) -> None:
    assert_error(await hq.delegate("manager", "nx-expert", task="T-404"), 404, "unknown_task")
    assert hq.fleet.received() == []


async def test_no_deliver_sends_neither_channel_nor_to(hq: Hq) -> None:
    await hq.services.tasks.add(OPERATOR, "Mesh the M2 mirror")
    response = await hq.delegate("manager", "nx-expert", deliver=False, target="#task-board", task="t1")
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["deliver"], body["target"], body["task"]) == (False, None, "T-1")
    [hook] = hq.fleet.received("nx-expert")
    assert hook.body["deliver"] is False
    assert "channel" not in hook.body and "to" not in hook.body


# --- dry run -----------------------------------------------------------------------------------


async def test_dry_run_shows_the_payload_and_records_nothing(hq: Hq) -> None:
    response = await hq.delegate("manager", "nx-expert", target="#task-board", dry_run=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"decision", "payload", "route"} and body["route"] is None  # route: only for to=auto
    assert body["decision"]["allowed"] is True
    payload = body["payload"]
    assert payload["message"] == "Mesh the M2 mirror" + chain_footer("D-new")
    assert (payload["deliver"], payload["channel"], payload["to"]) == (True, "discord", "channel:100000000000000102")
    assert hq.fleet.received() == []
    assert await hq.stored() == []
    assert await hq.audit() == []


async def test_dry_run_of_a_refusal_says_why(hq: Hq) -> None:
    response = await hq.delegate("tech-lead", "manager", dry_run=True)
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert decision["allowed"] is False
    assert decision["reason"].startswith("tech-lead may not delegate to manager")
    assert hq.fleet.received() == []
    assert await hq.stored() == []


# --- reading -----------------------------------------------------------------------------------


async def test_the_record_is_the_services_record(hq: Hq) -> None:
    await hq.services.tasks.add(OPERATOR, "Mesh the M2 mirror")
    created = (await hq.delegate("manager", "nx-expert", task="T-1")).json()
    record = (await hq.services.delegation.get(created["id"])).to_dict()
    assert created.pop("decision")["allowed"] is True
    assert created.pop("route") is None  # a named agent: nothing was routed
    assert created == record
    for ref in (record["id"], record["id"].removeprefix("D-"), record["id"].lower()):
        response = await hq.get(f"/v1/delegations/{ref}", "nx-expert")
        assert response.status_code == 200, response.text
        assert response.json() == record
    listed = (await hq.get("/v1/delegations")).json()["delegations"]
    assert listed == [record]


async def test_unknown_delegation_is_404(hq: Hq) -> None:
    assert "D-999" in assert_error(await hq.get("/v1/delegations/D-999"), 404, "unknown_delegation")
    assert_error(await hq.get("/v1/delegations/mesh"), 400, "invalid_input")


async def test_list_filters_and_pages_newest_first(hq: Hq) -> None:
    await hq.fleet.take_down("webster")
    plan = [
        ("manager", "nx-expert"),
        ("operator", "optimizer"),
        ("manager", "webster"),  # queued: webster is down
        ("tech-lead", "nx-expert"),
        ("manager", "nx-expert"),
    ]
    ids = []
    for identity, agent in plan:
        response = await hq.delegate(identity, agent)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    newest_first = ids[::-1]

    async def listed(**params: Any) -> tuple[list[str], str | None]:
        response = await hq.get("/v1/delegations", "tech-lead", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [d["id"] for d in body["delegations"]], body["next_before"]

    assert await listed() == (newest_first, None)
    assert await listed(agent="nx-expert") == ([ids[4], ids[3], ids[0]], None)
    assert await listed(status="queued") == ([ids[2]], None)
    assert await listed(requester="operator") == ([ids[1]], None)
    assert await listed(agent="webster", status="accepted") == ([], None)

    pages, before = [], None
    while True:
        page, before = await listed(limit=2, **({"before": before} if before else {}))
        pages.append(page)
        if before is None:
            break
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert await listed(limit=2, agent="nx-expert", before=ids[4].removeprefix("D-")) == ([ids[3], ids[0]], None)


@pytest.mark.parametrize(
    ("params", "status", "code", "named"),
    [
        ({"status": "done"}, 400, "invalid_input", "status"),
        ({"limit": "0"}, 400, "invalid_input", "limit"),
        ({"limit": "101"}, 400, "invalid_input", "limit"),
        ({"agnet": "webster"}, 400, "invalid_input", "agnet"),
        ({"before": "yesterday"}, 400, "invalid_input", "yesterday"),
        ({"agent": "webstr"}, 404, "unknown_agent", "webster"),
    ],
)
async def test_list_refuses_bad_filters(hq: Hq, params: dict[str, str], status: int, code: str, named: str) -> None:
    assert named in assert_error(await hq.get("/v1/delegations", **params), status, code)


# --- retry -------------------------------------------------------------------------------------


async def failed_delegation(hq: Hq) -> str:
    """A delegation the gateway rejected (hooks switched off): failed, and retrying is a person's call."""
    hq.fleet.spec("webster").hooks_enabled = False
    response = await hq.delegate("manager", "webster")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "failed"
    hq.fleet.spec("webster").hooks_enabled = True
    return response.json()["id"]


@pytest.mark.parametrize("identity", ["manager", "tech-lead", "nx-expert"])
async def test_agents_may_not_retry(hq: Hq, identity: str) -> None:
    delegation_id = await failed_delegation(hq)
    response = await hq.client.post(f"/v1/delegations/{delegation_id}/retry", headers=auth(identity))
    assert "operator level" in assert_error(response, 403, "forbidden")
    assert hq.fleet.received() == []
    assert (await hq.services.delegation.get(delegation_id)).status == "failed"


async def test_operator_retries_a_failed_delegation(hq: Hq) -> None:
    delegation_id = await failed_delegation(hq)
    response = await hq.client.post(f"/v1/delegations/{delegation_id}/retry", headers=auth("operator"))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["id"], body["status"], body["attempts"]) == (delegation_id, "accepted", 2)
    assert body == (await hq.services.delegation.get(delegation_id)).to_dict()
    [hook] = hq.fleet.received("webster")
    assert hook.run_id == body["run_id"]
    # Accepted now: nothing left to retry.
    again = await hq.client.post(f"/v1/delegations/{delegation_id}/retry", headers=auth("operator"))
    assert "accepted" in assert_error(again, 400, "invalid_input")
    missing = await hq.client.post("/v1/delegations/D-999/retry", headers=auth("operator"))
    assert_error(missing, 404, "unknown_delegation")


# --- the document ------------------------------------------------------------------------------


async def test_openapi_documents_the_delegation_routes(hq: Hq) -> None:
    doc = (await hq.client.get("/openapi.json")).json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    assert {"DelegationIn", "DelegationCreated", "DelegationDryRun", "DelegationRecord", "DelegationList"} <= set(
        schemas
    )
    create = paths["/v1/delegations"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DelegationIn"
    }
    assert set(create["responses"]) >= {"200", "202", "400", "401", "403", "404", "413"}
    assert "requester" not in schemas["DelegationIn"]["properties"]
    created = (await hq.delegate("manager", "auditor")).json()
    record = (await hq.services.delegation.get(created["id"])).to_dict()
    assert set(schemas["DelegationRecord"]["properties"]) == set(record)
    listing = {p["name"] for p in paths["/v1/delegations"]["get"]["parameters"]}
    assert listing == {"agent", "status", "requester", "limit", "before"}
    assert paths["/v1/delegations/{id}"]["get"]["parameters"][0]["schema"] == {"type": "string"}
    assert "403" in paths["/v1/delegations/{id}/retry"]["post"]["responses"]


# --- chains ------------------------------------------------------------------------------------


async def test_a_chain_over_the_api_is_recorded_drawn_and_capped(hq: Hq) -> None:
    root = (await hq.delegate("manager", "tech-lead", "Run the M2 study")).json()
    child = await hq.delegate("tech-lead", "optimizer", "Tune the supports", parent=root["id"])
    assert child.status_code == 202, child.text
    assert (child.json()["parent"], child.json()["root"], child.json()["depth"]) == ("D-1", "D-1", 2)
    grandchild = (await hq.delegate("optimizer", "nx-expert", "Mesh it", parent="D-2")).json()
    assert (grandchild["id"], grandchild["depth"]) == ("D-3", 3)
    # nx-expert may not delegate at all; with a wider matrix it would still hit the depth cap (tests elsewhere)
    refused = await hq.delegate("tech-lead", "webster", "Find it", parent="D-2")  # D-2 is optimizer's
    assert "D-2 was delegated to optimizer, not to tech-lead" in assert_error(refused, 403, "chain_refused")
    tree = await hq.get("/v1/delegations/D-3/tree", "nx-expert")
    assert tree.status_code == 200, tree.text
    body = tree.json()
    assert body["root"] == "D-1" and [d["id"] for d in body["delegations"]] == ["D-1", "D-2", "D-3"]
    lines = body["text"].splitlines()
    assert lines[0] == "chain D-1: chain of 3, 3 deep"
    assert lines[1].startswith("D-1 tech-lead: accepted, ") and lines[1].endswith('by manager: "Run the M2 study"')
    assert lines[2].startswith("└─ D-2 optimizer: accepted") and lines[3].startswith("   └─ D-3 nx-expert: accepted")
    assert_error(await hq.get("/v1/delegations/D-9/tree"), 404, "unknown_delegation")
    blank = await hq.delegate("tech-lead", "optimizer", parent="")
    assert "the parent is empty" in assert_error(blank, 400, "invalid_input")


async def test_the_per_root_cap_is_a_409_naming_the_chain(hq: Hq) -> None:
    hq.services.delegation._config = hq.services.config.model_copy(
        update={"delegation": hq.services.config.delegation.model_copy(update={"max_per_root": 2})}
    )
    await hq.delegate("operator", "tech-lead", "Run the M2 study")
    assert (await hq.delegate("tech-lead", "optimizer", parent="D-1")).status_code == 202
    detail = assert_error(await hq.delegate("tech-lead", "webster", parent="D-1"), 409, "chain_limit")
    assert detail.startswith("chain D-1 has 2 delegations already, the limit per chain is 2")
    assert hq.fleet.received("webster") == []


async def test_cancel_is_for_operators_and_the_agent_that_made_it(hq: Hq) -> None:
    await hq.fleet.take_down("webster")
    await hq.delegate("manager", "tech-lead", "Run the M2 study")  # D-1
    await hq.delegate("tech-lead", "webster", "Find the CTE", parent="D-1")  # D-2, queued
    other = await hq.client.post("/v1/delegations/D-1/cancel", headers=auth("nx-expert"))
    assert "agent nx-expert is neither" in assert_error(other, 403, "forbidden")
    mine = await hq.client.post("/v1/delegations/D-1/cancel", headers=auth("manager"))
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert (body["stopped"], body["with_agent"]) == (["D-2"], ["D-1"])
    assert body["summary"] == (
        "cancelled D-1; stopped before they were sent: D-2 (webster); "
        "already with an agent (tell it to stop): D-1 tech-lead (accepted)"
    )
    assert [d["status"] for d in body["delegations"]] == ["accepted", "expired"]
    again = await hq.client.post("/v1/delegations/D-2/cancel", headers=auth("operator"))
    assert again.json()["summary"] == "cancelled D-2; nothing was waiting to be sent"
