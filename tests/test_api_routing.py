"""Routing through the loopback API: `POST /v1/delegations {"to": "auto", "needs": [...]}` and `GET /v1/route`."""

from __future__ import annotations

import asyncio
import json

from bot.authz import Requester
from bot.delegation import chain_footer
from tests.test_api import assert_error
from tests.test_api_delegations import Hq, auth, hq  # noqa: F401  (the fixture)


async def test_to_auto_reaches_the_agent_with_the_capability_and_says_why(hq: Hq) -> None:  # noqa: F811
    response = await hq.delegate("manager", "auto", "Mesh the bracket", needs=["Meshing"])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["agent"] == "nx-expert" and body["status"] == "accepted"
    route = body["route"]
    assert route["chosen"] == "nx-expert" and route["queued"] is False and route["needs"] == ["meshing"]
    assert route["explanation"] == "nx-expert: has meshing; ready; 0 in flight; no delegations yet"
    assert {row["agent"] for row in route["table"]} == set(hq.services.config.agent_names)
    [hook] = hq.fleet.received()
    assert hook.agent == "nx-expert" and hook.body["message"] == "Mesh the bracket" + chain_footer(body["id"])

    # The decision is in the audit trail with its table, beside the delegation's own row.
    rows = await hq.services.store.fetchall("SELECT action, subject, detail FROM audit_log ORDER BY id")
    assert [(r["action"], r["subject"]) for r in rows] == [("route", "nx-expert"), ("delegate", "nx-expert")]
    assert len(json.loads(rows[0]["detail"])["table"]) == 8

    named = await hq.delegate("manager", "nx-expert", "Mesh again", needs=["fea"])
    assert named.status_code == 202 and named.json()["route"] is None


async def test_route_preview_shows_the_table_without_deciding(hq: Hq) -> None:  # noqa: F811
    response = await hq.get("/v1/route", "tech-lead", needs="meshing,fea")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["chosen"] == "nx-expert" and body["requester"] == "tech-lead"
    by_agent = {row["agent"]: row for row in body["table"]}
    assert by_agent["manager"]["refusals"] == {
        "capabilities": "lacks meshing, fea",
        "authority": "tech-lead may not delegate to manager",
    }
    assert by_agent["nx-expert"]["rank"] == 1
    assert await hq.services.store.fetchall("SELECT 1 FROM audit_log WHERE action = 'route'") == []
    typo = await hq.get("/v1/route", needs="meshin")
    assert "Did you mean 'meshing'" in assert_error(typo, 400, "unknown_capability")


async def test_bad_needs_and_nobody_eligible_are_clear_refusals(hq: Hq) -> None:  # noqa: F811
    detail = assert_error(await hq.delegate("manager", "auto", needs=["meshng"]), 400, "unknown_capability")
    assert "Did you mean 'meshing'?" in detail
    assert_error(await hq.delegate("manager", "auto"), 400, "invalid_input")
    detail = assert_error(await hq.delegate("manager", "webster", needs=["meshing"]), 400, "invalid_input")
    assert "webster lacks meshing" in detail

    # nx-expert is the only one with cad and may not delegate to itself: 409 with the whole table, nothing sent.
    response = await hq.client.post(
        "/v1/delegations", headers=auth("nx-expert"), json={"to": "auto", "message": "Mesh it", "needs": ["cad"]}
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "nobody_eligible"
    assert body["detail"].startswith("nobody can take work needing cad: nx-expert: nx-expert may not delegate to")
    assert body["route"]["chosen"] is None and len(body["route"]["table"]) == 8
    assert hq.fleet.received() == []
    [(decision,)] = await hq.services.store.fetchall("SELECT decision FROM audit_log WHERE action = 'route'")
    assert decision == "refused"


async def test_a_synchronous_delegation_can_be_routed_too(hq: Hq) -> None:  # noqa: F811
    body = {"to": "auto", "needs": ["fea"], "message": "Run the FEA", "wait_s": 30}
    waiting = asyncio.create_task(hq.client.post("/v1/delegations/wait-result", headers=auth("operator"), json=body))
    engine = hq.services.workflows
    async with engine.changed:
        await asyncio.wait_for(engine.changed.wait_for(lambda: bool(hq.fleet.received("nx-expert"))), 30)
    nx = Requester(kind="agent", name="nx-expert", front_end="api")
    await engine.report_result(nx, "W-1", "work", ok=True, output="12 MPa", source="api")
    answer = await waiting
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == "12 MPa"


async def test_a_request_that_cannot_be_sent_is_refused_before_routing(hq: Hq) -> None:  # noqa: F811
    detail = assert_error(await hq.delegate("manager", "auto", needs=["meshing"], target=" "), 400, "invalid_target")
    assert "the delivery target is empty" in detail
    assert_error(await hq.delegate("manager", "auto", "\u200b", needs=["meshing"]), 400, "invalid_input")
    assert await hq.services.store.fetchall("SELECT 1 FROM audit_log WHERE action = 'route'") == []
    assert hq.fleet.received() == []
