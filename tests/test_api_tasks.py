"""The task routes of the loopback API: a real server on 127.0.0.1 over real services (tmp SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.api import LoopbackApi
from bot.authz import AccessLevel, Requester
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from tests.conftest import API_TOKENS, ServicesOnFleet
from tests.test_api import assert_error

ADMIN_TOKEN = "api-SECRET-admin-9e8d7c6b5a4f3e2"
TOKENS = {**API_TOKENS, "admin": ADMIN_TOKEN}
ANTOINE = Requester(kind="person", name="antoine", front_end="discord", level=AccessLevel.OPERATOR)
EVERYONE = ("manager", "tech-lead", "nx-expert", "operator", "admin")


@dataclass
class Hq:
    api: LoopbackApi
    services: Services
    client: httpx.AsyncClient

    async def create(
        self, identity: str = "operator", title: str = "Mesh the M2 mirror", **fields: Any
    ) -> httpx.Response:
        return await self.client.post("/v1/tasks", headers=auth(identity), json={"title": title, **fields})

    async def patch(self, task: str, identity: str = "operator", headers: dict[str, str] | None = None,
                    **fields: Any) -> httpx.Response:  # fmt: skip
        return await self.client.patch(f"/v1/tasks/{task}", headers={**auth(identity), **(headers or {})}, json=fields)

    async def get(self, path: str, identity: str = "operator", **params: Any) -> httpx.Response:
        return await self.client.get(path, headers=auth(identity), params=params)

    async def record(self, task: str) -> dict[str, Any]:
        """The core's own record of the task: what every answer must equal."""
        return (await self.services.tasks.get(task)).to_dict()


def auth(identity: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[identity]}"}


@pytest.fixture
async def hq(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[Hq]:
    services, _ = await services_on_fleet()
    identities = settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES])
    api = LoopbackApi(services, {**identities, "admin": SecretStr(ADMIN_TOKEN)})
    await api.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10, trust_env=False) as client:
            yield Hq(api, services, client)
    finally:
        await api.stop()


# --- creating ------------------------------------------------------------------------------------


async def test_operator_creates_a_task_and_the_record_is_the_cores(hq: Hq) -> None:
    response = await hq.create(assignee="nx-expert", priority="high", due="2026-12-01", description="M2, 42k elements")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == await hq.record("T-1")
    assert (body["id"], body["status"], body["priority"], body["due"], body["version"]) == (
        "T-1", "todo", "high", "2026-12-01", 1,
    )  # fmt: skip
    assert body["assignee"] == {"kind": "agent", "id": "nx-expert", "label": "nx-expert"}
    assert body["creator"] == {"kind": "person", "name": "operator"}
    assert response.headers["Location"] == "/v1/tasks/T-1"
    assert response.headers["ETag"] == '"1"'


async def test_an_agent_creates_tasks_as_itself(hq: Hq) -> None:
    response = await hq.create("manager", "Review thermal analysis", assignee="auditor")
    assert response.status_code == 201, response.text
    assert response.json()["creator"] == {"kind": "agent", "name": "manager"}
    [event] = (await hq.services.tasks.show("T-1")).history
    assert (event.actor_kind, event.actor, event.front_end) == ("agent", "manager", "api")


@pytest.mark.parametrize("claim", [{"creator": "operator"}, {"requester": "admin"}, {"as": "manager"}])
async def test_the_body_cannot_claim_an_identity(hq: Hq, claim: dict[str, Any]) -> None:
    detail = assert_error(await hq.create("nx-expert", **claim), 400, "invalid_input")
    assert f"'{next(iter(claim))}'" in detail and "bearer token" in detail
    assert await hq.services.tasks.count() == 0


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "title: Field required"),
        ({"title": "  \u200b "}, "the title is empty"),
        ({"title": "x" * 201}, "the title is 201 characters"),
        ({"title": "T", "priority": "asap"}, "unknown priority 'asap'"),
        ({"title": "T", "due": "next week"}, "is not a due date"),
        ({"title": "T", "assignee": "#task-board"}, "is a channel"),
        ({"title": "T", "owner": "nx-expert"}, "owner: Extra inputs are not permitted"),
        ({"title": 42}, "title: Input should be a valid string"),
    ],
)
async def test_bad_new_tasks_are_400_naming_the_field(hq: Hq, body: dict[str, Any], named: str) -> None:
    response = await hq.client.post("/v1/tasks", headers=auth("operator"), json=body)
    assert named in assert_error(response, 400, "invalid_input")
    assert await hq.services.tasks.count() == 0


async def test_an_unknown_assignee_is_refused(hq: Hq) -> None:
    response = await hq.create(assignee="nx-exprt")
    assert "nx-exprt" in assert_error(response, 400, "invalid_target")


async def test_a_token_is_required(hq: Hq) -> None:
    assert_error(await hq.client.get("/v1/tasks"), 401, "unauthorized")
    assert_error(await hq.client.post("/v1/tasks", json={"title": "T"}), 401, "unauthorized")
    assert_error(await hq.client.patch("/v1/tasks/T-1", json={"status": "done"}), 401, "unauthorized")
    assert await hq.services.tasks.count() == 0


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("identity", EVERYONE)
async def test_everyone_reads(hq: Hq, identity: str) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror", assignee="optimizer")
    listing = await hq.get("/v1/tasks", identity)
    assert listing.status_code == 200, listing.text
    assert listing.json() == {"tasks": [await hq.record("T-1")], "total": 1}
    one = await hq.get("/v1/tasks/T-1", identity)
    assert one.status_code == 200, one.text
    assert one.headers["ETag"] == '"1"'


async def test_show_is_the_record_with_its_history_and_delegations(hq: Hq) -> None:
    await hq.create(title="Mesh the M2 mirror")
    delegated = await hq.client.post(
        "/v1/delegations", headers=auth("manager"), json={"to": "nx-expert", "message": "Mesh it", "task": "T-1"}
    )
    assert delegated.status_code == 202, delegated.text
    response = await hq.get("/v1/tasks/1")
    assert response.status_code == 200, response.text
    body = response.json()
    history, delegations = body.pop("history"), body.pop("delegations")
    assert body == await hq.record("T-1")
    assert body["status"] == "in_progress" and body["assignee"]["id"] == "nx-expert"  # the task followed
    assert [event["text"] for event in history] == [
        "T-1 created by operator: Mesh the M2 mirror (api)",
        f"T-1 assigned to nx-expert by manager: delegated as {delegated.json()['id']} (api)",
        f"T-1 todo → in_progress by manager: delegated as {delegated.json()['id']} (api)",
    ]
    assert set(history[0]) == {"at", "actor_kind", "actor", "front_end", "action", "old_value", "new_value", "note",
                               "text"}  # fmt: skip
    assert (history[2]["action"], history[2]["old_value"], history[2]["new_value"]) == ("move", "todo", "in_progress")
    assert delegations == [
        {
            "id": delegated.json()["id"],
            "agent": "nx-expert",
            "status": "accepted",
            "run_id": delegated.json()["run_id"],
            "created_at": delegated.json()["created_at"],
        }
    ]


async def test_list_filters_and_pages(hq: Hq) -> None:
    tasks = hq.services.tasks
    await tasks.add(ANTOINE, "Low todo", assignee="nx-expert", priority="low")
    await tasks.add(ANTOINE, "Urgent todo", assignee="nx-expert", priority="urgent")
    await tasks.add(ANTOINE, "Optimizer's", assignee="optimizer")
    await tasks.done(ANTOINE, "T-1")
    await tasks.block(ANTOINE, "T-3", "waiting for the licence")

    async def ids(**params: Any) -> tuple[list[str], int]:
        response = await hq.get("/v1/tasks", **params)
        assert response.status_code == 200, response.text
        return [task["id"] for task in response.json()["tasks"]], response.json()["total"]

    assert await ids() == (["T-3", "T-2"], 2)  # open only, blocked first
    assert await ids(open="false") == (["T-3", "T-2", "T-1"], 3)
    assert await ids(status="done") == (["T-1"], 1)
    assert await ids(status="done", open="true") == (["T-1"], 1)  # a status says which, whatever `open` says
    assert await ids(assignee="nx-expert") == (["T-2"], 1)
    assert await ids(assignee="nx-expert", open="false") == (["T-2", "T-1"], 2)
    assert await ids(open="false", limit=2) == (["T-3", "T-2"], 3)
    assert await ids(open="false", limit=2, offset=2) == (["T-1"], 3)


@pytest.mark.parametrize(
    ("params", "status", "code", "named"),
    [
        ({"limit": "0"}, 400, "invalid_input", "limit"),
        ({"limit": "201"}, 400, "invalid_input", "limit"),
        ({"offset": "-1"}, 400, "invalid_input", "offset"),
        ({"open": "maybe"}, 400, "invalid_input", "open"),
        ({"status": "frozen"}, 400, "invalid_input", "unknown status 'frozen'"),
        ({"assignee": "#task-board"}, 400, "invalid_input", "is a channel"),
        ({"asignee": "nx-expert"}, 400, "invalid_input", "asignee: Extra inputs are not permitted"),
    ],
)
async def test_list_refuses_bad_filters(hq: Hq, params: dict[str, str], status: int, code: str, named: str) -> None:
    assert named in assert_error(await hq.get("/v1/tasks", **params), status, code)


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/tasks/T-99"), ("PATCH", "/v1/tasks/99")])
async def test_an_unknown_task_is_404(hq: Hq, method: str, path: str) -> None:
    response = await hq.client.request(method, path, headers=auth("operator"), json={"status": "done"})
    assert "no task T-99" in assert_error(response, 404, "unknown_task")


async def test_a_malformed_task_id_is_400(hq: Hq) -> None:
    assert "not a task id" in assert_error(await hq.get("/v1/tasks/X-1"), 400, "invalid_input")


# --- changing: who may ---------------------------------------------------------------------------


async def test_an_agent_changes_its_own_task(hq: Hq) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert")
    response = await hq.patch("T-1", "nx-expert", status="in_progress", note="meshing")
    assert response.status_code == 200, response.text
    assert response.json() == await hq.record("T-1")
    assert response.json()["status"] == "in_progress" and response.json()["version"] == 2
    assert response.headers["ETag"] == '"2"'
    event = (await hq.services.tasks.show("T-1")).history[-1]
    assert (event.actor, event.front_end, event.note) == ("nx-expert", "api", "meshing")


@pytest.mark.parametrize(
    ("assignee", "shown"),
    [("optimizer", "is assigned to optimizer"), (None, "is unassigned")],
    ids=["another-agent", "nobody"],
)
async def test_an_agent_may_not_change_another_task(hq: Hq, assignee: str | None, shown: str) -> None:
    await hq.services.tasks.add(ANTOINE, "Tune the optimizer", assignee=assignee)
    for change in ({"status": "done"}, {"assignee": "nx-expert"}):
        detail = assert_error(await hq.patch("T-1", "nx-expert", **change), 403, "forbidden")
        assert detail.startswith(f"nx-expert may change only tasks assigned to it; T-1 {shown}")
    task = await hq.record("T-1")
    assert (task["status"], task["version"]) == ("todo", 1)


@pytest.mark.parametrize("identity", ["operator", "admin"])
async def test_people_change_any_task(hq: Hq, identity: str) -> None:
    await hq.services.tasks.add(ANTOINE, "Tune the optimizer", assignee="optimizer")
    response = await hq.patch("T-1", identity, status="blocked", note="waiting for the licence")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["blocked_reason"]) == ("blocked", "waiting for the licence")
    response = await hq.patch("T-1", identity, assignee="@nx-expert")
    assert response.status_code == 200, response.text
    assert response.json()["assignee"]["id"] == "nx-expert"
    response = await hq.patch("T-1", identity, assignee=None)  # an explicit null unassigns
    assert response.status_code == 200, response.text
    assert response.json()["assignee"] is None and response.json() == await hq.record("T-1")


async def test_an_agent_finishes_its_task_and_hands_it_on(hq: Hq) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert")
    response = await hq.patch("T-1", "nx-expert", status="review", assignee="auditor", note="meshed", version=1)
    assert response.status_code == 200, response.text
    body = response.json()
    # One request, one version step, a history line per change.
    assert (body["status"], body["assignee"]["id"], body["version"]) == ("review", "auditor", 2)
    history = [e.describe() for e in (await hq.services.tasks.show("T-1")).history[1:]]
    assert history == ["T-1 todo → review by nx-expert: meshed (api)", "T-1 assigned to auditor by nx-expert (api)"]
    # Now it is the auditor's: nx-expert may no longer touch it.
    assert_error(await hq.patch("T-1", "nx-expert", status="in_progress"), 403, "forbidden")


# --- changing: bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "nothing to change"),
        ({"note": "just a note"}, "nothing to change"),
        ({"status": "frozen"}, "unknown status 'frozen'"),
        ({"status": "blocked"}, "say why the task is blocked"),
        ({"status": "done", "note": "x" * 501}, "the note is 501 characters"),
        ({"status": "done", "version": 0}, "version: Input should be greater than or equal to 1"),
        ({"status": "done", "version": "two"}, "version: Input should be a valid integer"),
        ({"status": "done", "requester": "admin"}, "'requester'"),
        ({"status": "done", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"status": "done", "assignee": "nx-exprt"}, "nx-exprt"),
    ],
)
async def test_bad_changes_are_400_naming_the_field_and_change_nothing(
    hq: Hq, body: dict[str, Any], named: str
) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror")
    response = await hq.client.patch("/v1/tasks/T-1", headers=auth("operator"), json=body)
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]
    task = await hq.record("T-1")  # a bad assignee does not leave the status half-applied either
    assert (task["status"], task["version"]) == ("todo", 1)


# --- concurrent front ends never lose an update --------------------------------------------------


async def test_a_stale_version_is_409_and_changes_nothing(hq: Hq) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert")
    read = (await hq.get("/v1/tasks/T-1")).json()["version"]
    await hq.services.tasks.move(ANTOINE, "T-1", "in_progress")  # someone on Discord, meanwhile
    response = await hq.patch("T-1", "nx-expert", status="done", note="meshed", version=read)
    detail = assert_error(response, 409, "conflict")
    assert detail.startswith("T-1 changed since you read it (you had version 1, it is now 2: in_progress")
    assert "reload it and try again" in detail
    task = await hq.record("T-1")
    assert (task["status"], task["version"]) == ("in_progress", 2)
    response = await hq.patch("T-1", "nx-expert", status="done", note="meshed", version=2)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("header", ['"1"', "1", 'W/"1"'])
async def test_if_match_carries_the_version(hq: Hq, header: str) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror")
    etag = (await hq.get("/v1/tasks/T-1")).headers["ETag"]
    assert etag == '"1"'
    response = await hq.patch("T-1", headers={"If-Match": header}, status="in_progress")
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"2"'
    stale = await hq.patch("T-1", headers={"If-Match": header}, status="done")
    assert "you had version 1, it is now 2" in assert_error(stale, 409, "conflict")
    assert (await hq.record("T-1"))["status"] == "in_progress"


@pytest.mark.parametrize(
    ("header", "body", "named"),
    [("soon", {}, "If-Match: 'soon' is not a task version"), ('"2"', {"version": 1}, "the body says 1")],
)
async def test_a_bad_if_match_is_400(hq: Hq, header: str, body: dict[str, Any], named: str) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror")
    response = await hq.patch("T-1", headers={"If-Match": header}, status="done", **body)
    assert named in assert_error(response, 400, "invalid_input")
    assert (await hq.record("T-1"))["version"] == 1


async def test_two_writers_with_the_same_version_one_wins_one_is_told(hq: Hq) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert")
    answers = await asyncio.gather(
        hq.patch("T-1", "nx-expert", status="done", note="meshed", version=1),
        hq.patch("T-1", "operator", status="cancelled", note="not needed", version=1),
    )
    assert sorted(a.status_code for a in answers) == [200, 409]
    [winner] = [a for a in answers if a.status_code == 200]
    [loser] = [a for a in answers if a.status_code == 409]
    assert loser.json()["error"] == "conflict"
    task = await hq.record("T-1")
    assert task == winner.json() and task["version"] == 2
    assert len((await hq.services.tasks.show("T-1")).history) == 2  # create + the winner's move, nothing lost


async def test_without_a_version_changes_apply_one_after_the_other(hq: Hq) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror")
    answers = await asyncio.gather(*(hq.patch("T-1", status=s) for s in ("in_progress", "review", "blocked")))
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert answers[2].status_code == 400  # blocked needs a note
    history = (await hq.services.tasks.show("T-1")).history
    assert len(history) == 3 and (await hq.record("T-1"))["version"] == 3


# --- the document --------------------------------------------------------------------------------


async def test_openapi_documents_the_task_routes(hq: Hq) -> None:
    doc = (await hq.client.get("/openapi.json")).json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    assert {"TaskIn", "TaskPatch", "TaskRecord", "TaskDetailOut", "TaskList", "TaskQuery"} <= set(schemas)
    create = paths["/v1/tasks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskIn"}
    assert set(create["responses"]) >= {"201", "400", "401", "403"}
    assert {p["name"] for p in paths["/v1/tasks"]["get"]["parameters"]} == {
        "assignee", "status", "open", "limit", "offset",
    }  # fmt: skip
    patch = paths["/v1/tasks/{id}"]["patch"]
    assert set(patch["responses"]) >= {"200", "400", "401", "403", "404", "409"}
    assert "If-Match" in patch["description"]
    assert set(schemas["TaskPatch"]["properties"]) == {"status", "note", "assignee", "version"}
    assert "creator" not in schemas["TaskIn"]["properties"]
    created = (await hq.create()).json()
    assert set(schemas["TaskRecord"]["properties"]) == set(await hq.record(created["id"]))
    detail = (await hq.get(f"/v1/tasks/{created['id']}")).json()
    assert set(schemas["TaskDetailOut"]["properties"]) == set(detail)


async def test_a_patch_that_changes_nothing_is_200_with_the_record_and_keeps_the_version(hq: Hq) -> None:
    await hq.services.tasks.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert")
    first = await hq.patch("T-1", "nx-expert", headers={"If-Match": '"1"'}, status="in_progress")
    assert first.status_code == 200 and first.headers["ETag"] == '"2"'

    # The same request again (a retry with the version it read), and the same status with the new version.
    retried = await hq.patch("T-1", "nx-expert", headers={"If-Match": '"1"'}, status="in_progress")
    again = await hq.patch("T-1", "nx-expert", headers={"If-Match": '"2"'}, status="in_progress", assignee="nx-expert")
    for response in (retried, again):
        assert response.status_code == 200, response.text
        assert response.headers["ETag"] == '"2"' and response.json() == first.json()
    # Nothing was recorded, so the version the caller holds still works.
    done = await hq.patch("T-1", "nx-expert", headers={"If-Match": '"2"'}, status="done", note="meshed")
    assert done.status_code == 200, done.text
    assert done.json()["version"] == 3
    assert len((await hq.services.tasks.show("T-1")).history) == 3  # create, in_progress, done
