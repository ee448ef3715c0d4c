"""The loopback API against hostile input: schemathesis from its own /openapi.json, oversized bodies,
and missing, wrong and other agents' tokens on every route it documents.

Covered elsewhere: 401s, a token in the query and a body over the cap on a few routes each
(tests/test_api.py, test_api_delegations.py, test_api_tasks.py, test_api_status.py). Here the routes
are enumerated from /openapi.json, so a route added later is checked without touching this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from bot.api import LoopbackApi
from bot.config import ClusterConfig
from bot.services import open_services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import SimAgentSpec, SimulatedFleet, free_ports
from bot.workflows.definition import WorkflowDefinition
from tests.conftest import API_TOKENS, HOOKS_TOKEN
from tests.test_api_delegations import Hq, auth

# --- the API in a thread of its own, so schemathesis (synchronous, requests) can call it ----------


@dataclass
class ThreadedApi:
    """Real services, a simulated fleet and the loopback API on their own event loop in a thread."""

    settings: Settings
    config: ClusterConfig
    url: str = ""
    error: BaseException | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="loopback-api", daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the API did not start"
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        specs = [SimAgentSpec(name=agent.name, port=agent.port) for agent in self.config.agents]
        async with SimulatedFleet(specs, HOOKS_TOKEN), open_services(self.settings, self.config) as services:
            identities = self.settings.api_identities([*self.config.agent_names, *HUMAN_IDENTITIES])
            api = LoopbackApi(services, identities)
            await api.start("127.0.0.1", 0)
            try:
                self.url = api.url
                self._ready.set()
                await self._stop.wait()
            finally:
                await api.stop()


ADMIN_TOKEN = "api-SECRET-admin-9f8e7d6c5b4a3"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SEED_DELEGATION = {"to": "nx-expert", "message": "Mesh the M2 mirror"}
KNOWN = {"agent": "manager", "id": "1", "to": "nx-expert", "assignee": "webster"}


def with_names(drawn: tuple[schemathesis.Case, bool]) -> schemathesis.Case:
    """A generated case with real names in it (an agent, an existing id), so it gets past lookups."""
    case, _ = drawn
    for name in list(case.path_parameters or {}):
        if name in KNOWN:
            case.path_parameters[name] = KNOWN[name]  # type: ignore[index]
    if isinstance(case.body, dict):
        for name in ("to", "assignee"):
            if name in case.body:
                case.body[name] = KNOWN[name]
    return case


# Per operation and identity. 25 keeps the two runs under 15 s; ATOMIZER_FUZZ_EXAMPLES=300 for a deep search.
EXAMPLES_PER_OPERATION = int(os.environ.get("ATOMIZER_FUZZ_EXAMPLES", "25"))


@pytest.fixture
def threaded_api(
    settings: Settings, make_config: Callable[..., ClusterConfig], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ThreadedApi]:
    monkeypatch.setenv("ATOMIZER_API_TOKEN_ADMIN", ADMIN_TOKEN)  # the settings fixture's tokens, plus an admin
    api = ThreadedApi(Settings(), make_config(free_ports(8)))
    api.start()
    try:
        yield api
    finally:
        api.stop()


# --- schemathesis ---------------------------------------------------------------------------------


def json_error_check(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every 4xx is our error shape: a JSON object with a string `error` and a non-empty `detail`."""
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), f"{response.status_code} as {content_type}"
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
        assert isinstance(body["error"], str) and body["error"], body
        assert isinstance(body["detail"], str) and body["detail"], body
    return None


@pytest.mark.parametrize("identity", ["manager", "admin"])
def test_schemathesis_finds_no_server_error_and_every_4xx_is_a_json_error(
    threaded_api: ThreadedApi, identity: str
) -> None:
    """Positive and negative cases for every operation of /openapi.json, with a real token.

    An agent's token (manager: it may delegate to everyone) and the admin token (past every level check,
    into the heartbeat run/pause/resume handlers).
    """
    schema = schemathesis.openapi.from_url(f"{threaded_api.url}/openapi.json")
    headers = {"Authorization": f"Bearer {API_TOKENS.get(identity, ADMIN_TOKEN)}"}
    session = requests.Session()
    session.trust_env = False  # loopback: never through a proxy from the environment
    seen: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    # Something to find: a task and a delegation with id 1, so generated cases can reach past "not found".
    for path, body in (("/v1/tasks", {"title": "Seed", "assignee": "webster"}), ("/v1/delegations", SEED_DELEGATION)):
        assert session.post(f"{threaded_api.url}{path}", json=body, headers=ADMIN, timeout=20).status_code < 300

    for operation in operations:  # each operation gets its share of examples
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            st.tuples(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), st.just(True)).map(with_names),
        )

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,  # the same cases every run: a failure here reproduces
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def fuzz(case: schemathesis.Case) -> None:
            if case.path == "/v1/delegations/wait-result" and isinstance(case.body, dict):
                # A valid case waits for the agent's result (600 s by default): a moment is enough to see it wait.
                wait = case.body.get("wait_s")
                if not isinstance(wait, int | float) or isinstance(wait, bool) or wait > 0.05:
                    case.body["wait_s"] = 0.05
            response = case.call(base_url=threaded_api.url, session=session, headers=headers, timeout=20)
            seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error, json_error_check], headers=headers)

        fuzz()
    assert len(seen) == len(operations), seen  # every operation was called
    assert any(code < 300 for codes in seen.values() for code in codes), seen  # and not only refused


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/tasks", {"offset": str(10**30)}),  # was a 500: SQLite cannot take the integer
        ("/v1/tasks", {"limit": str(10**30)}),
        ("/v1/delegations/99999999999999999999999", {}),  # was a 500 (the same overflow)
        ("/v1/delegations/D-²", {}),  # was a 500: "²" passes str.isdigit, not int()
        ("/v1/delegations", {"before": "D-99999999999999999999999"}),
        ("/v1/delegations", {"before": "¹²"}),
        ("/v1/tasks/T-99999999999999999999", {}),
    ],
)
async def test_numbers_too_big_or_not_ascii_are_a_400_or_404_never_a_500(
    hq: Hq, path: str, params: dict[str, str]
) -> None:
    """Cases the fuzzing found, kept as plain tests (the fuzzing is derandomized and may not hit them)."""
    response = await hq.client.get(path, params=params, headers=auth("manager"))
    assert response.status_code in (400, 404), response.text
    assert_json_error(response, response.status_code)


# --- tokens on every route --------------------------------------------------------------------------

PATH_VALUES = {"id": "1", "agent": "manager", "step": "review"}


def routes(document: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(METHOD, concrete path, needs a token) for every operation of the document."""
    found = []
    for path, operations in document["paths"].items():
        concrete = path.format(**PATH_VALUES)
        for method, operation in operations.items():
            found.append((method.upper(), concrete, bool(operation.get("security"))))
    return found


def assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if code is not None:
        assert body["error"] == code, body


async def test_every_route_refuses_a_missing_or_wrong_token_and_any_token_in_the_query(hq: Hq) -> None:
    document = (await hq.client.get("/openapi.json")).json()
    found = routes(document)
    protected = [(method, path) for method, path, needs in found if needs]
    # The contract's routes are all there and protected (so this loop cannot pass by finding nothing).
    for route in [("GET", "/v1/status"), ("POST", "/v1/delegations"), ("GET", "/v1/delegations/1"),
                  ("GET", "/v1/tasks"), ("POST", "/v1/tasks"), ("PATCH", "/v1/tasks/1"),
                  ("POST", "/v1/heartbeats/manager/run")]:  # fmt: skip
        assert route in protected, route
    wrong = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic bWFuYWdlcjpzZWNyZXQ="},
        {"Authorization": f"Bearer {API_TOKENS['manager'].upper()}"},
        {"Authorization": f"Bearer {API_TOKENS['manager']}x"},
        {"Authorization": f"Token {API_TOKENS['manager']}"},
        {"X-OpenClaw-Token": API_TOKENS["manager"]},
    ]
    for method, path in protected:
        for headers in wrong:
            response = await hq.client.request(method, path, headers=headers, json={})
            assert_json_error(response, 401, "unauthorized")
            assert response.headers.get("WWW-Authenticate") == "Bearer"
    for method, path, _ in found:  # public routes too: a URL with a token in it is refused outright
        for key in ("token", "access_token", "api_key"):
            response = await hq.client.request(
                method, path, params={key: API_TOKENS["manager"]}, headers=auth("manager"), json={}
            )
            assert_json_error(response, 400, "token_in_query")
            assert API_TOKENS["manager"] not in response.text
    assert hq.fleet.received() == [] and await hq.stored() == []


# What another agent's token may do on each write route; every write route must be listed, so a new
# one gets a decision here. The callable sets the scene and returns (identity, path, body).
Scene = Callable[[Hq], Any]


async def task_of_webster(hq: Hq) -> tuple[str, str, dict[str, Any]]:
    task = {"title": "Search", "assignee": "webster"}
    created = await hq.client.post("/v1/tasks", headers=auth("operator"), json=task)
    return "nx-expert", f"/v1/tasks/{created.json()['id']}", {"status": "done"}


async def a_delegation(hq: Hq) -> tuple[str, str, dict[str, Any] | None]:
    created = await hq.delegate("manager", "webster", "Find the CTE")
    return "manager", f"/v1/delegations/{created.json()['id']}/retry", None


async def a_delegation_to_cancel(hq: Hq) -> tuple[str, str, dict[str, Any] | None]:
    created = await hq.delegate("manager", "webster", "Find the CTE")
    return "nx-expert", f"/v1/delegations/{created.json()['id']}/cancel", None


class _Catalog:
    def __init__(self, *definitions: WorkflowDefinition) -> None:
        self.by_name = {d.name: d for d in definitions}

    def get(self, name: str) -> WorkflowDefinition:
        return self.by_name[name]

    def definitions(self) -> list[WorkflowDefinition]:
        return list(self.by_name.values())


SEARCH = WorkflowDefinition.model_validate(
    {"name": "search", "description": "Search, then a gate.", "steps": [
        {"id": "find", "agent": "webster", "message": "Find the CTE", "timeout": "1h"},
        {"id": "review", "approval": {"prompt": "OK?", "approvers": ["role:admin"]}},
    ]}
)  # fmt: skip


async def a_workflow_run(hq: Hq) -> str:
    """W-n started by the operator: webster searches while its gate waits."""
    hq.services.workflows.catalog = _Catalog(SEARCH)
    created = await hq.client.post("/v1/workflow-runs", headers=auth("operator"), json={"workflow": "search"})
    assert created.status_code == 201, created.text
    run = str(created.json()["id"])
    await settled(hq, run, "find")
    return run


async def settled(hq: Hq, run: str, step_id: str) -> None:
    """Until the simulated agent's run of `step_id` has completed and been recorded: nothing of the scene is still
    moving when the test takes its snapshot (a completion landing in between is not the refused request's doing)."""
    engine = hq.services.workflows
    deadline = asyncio.get_running_loop().time() + 30.0
    while "completed_at" not in (await engine.get(run)).step(step_id).evidence:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"{run}/{step_id}: the simulated agent's completion was never recorded"
        async with engine.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(engine.changed.wait(), min(0.2, left))
    await engine.idle()


def on_a_run(identity: str, suffix: str, body: dict[str, Any]) -> Scene:
    async def scene(hq: Hq) -> tuple[str, str, dict[str, Any]]:
        return identity, f"/v1/workflow-runs/{await a_workflow_run(hq)}{suffix}", body

    return scene


async def start_beyond_authority(hq: Hq) -> tuple[str, str, dict[str, Any]]:
    hq.services.workflows.catalog = _Catalog(SEARCH)
    return "nx-expert", "/v1/workflow-runs", {"workflow": "search"}  # nx-expert may not delegate to webster


OTHER_AGENT = {
    ("POST", "/v1/delegations"): lambda hq: ("nx-expert", "/v1/delegations", {"to": "webster", "message": "Go"}),
    ("POST", "/v1/delegations/{id}/retry"): a_delegation,  # retrying is for people
    ("POST", "/v1/delegations/{id}/cancel"): a_delegation_to_cancel,  # an operator, or the agent that made it
    ("POST", "/v1/delegations/wait-result"): lambda hq: (
        "nx-expert",
        "/v1/delegations/wait-result",
        {"to": "webster", "message": "Go", "wait_s": 1},
    ),
    ("PATCH", "/v1/tasks/{id}"): task_of_webster,
    ("POST", "/v1/heartbeats/{agent}/run"): lambda hq: ("manager", "/v1/heartbeats/manager/run", None),
    ("POST", "/v1/heartbeats/{agent}/pause"): lambda hq: ("manager", "/v1/heartbeats/manager/pause", {}),
    ("POST", "/v1/heartbeats/{agent}/resume"): lambda hq: ("manager", "/v1/heartbeats/manager/resume", None),
    ("POST", "/v1/heartbeats/{agent}/seen"): lambda hq: ("nx-expert", "/v1/heartbeats/webster/seen", None),
    ("POST", "/v1/workflow-runs"): start_beyond_authority,
    ("POST", "/v1/workflow-runs/{id}/cancel"): on_a_run("nx-expert", "/cancel", {}),  # its starter or people
    ("POST", "/v1/workflow-runs/{id}/retry"): on_a_run("nx-expert", "/retry", {"from": "find"}),
    ("POST", "/v1/workflow-runs/{id}/steps/{step}/approve"): on_a_run("manager", "/steps/review/approve", {}),
    ("POST", "/v1/workflow-runs/{id}/steps/{step}/reject"): on_a_run("manager", "/steps/review/reject", {}),
    ("POST", "/v1/workflow-runs/{id}/steps/{step}/result"): on_a_run("nx-expert", "/steps/find/result", {"ok": True}),
}
OPEN_TO_AGENTS = {("POST", "/v1/tasks")}  # any caller may create a task (as itself)


async def snapshot(hq: Hq) -> list[list[tuple[Any, ...]]]:
    """Everything a write could change (refusals are audited, so not the audit log)."""
    tables = (
        "delegations", "tasks", "task_events", "heartbeat_runs", "heartbeat_state",
        "workflow_runs", "workflow_steps", "workflow_approvals",
    )  # fmt: skip
    return [[tuple(row) for row in await hq.services.store.fetchall(f"SELECT * FROM {t} ORDER BY 1")] for t in tables]


async def test_agent_scoped_writes_refuse_another_agents_token_with_403_and_change_nothing(hq: Hq) -> None:
    document = (await hq.client.get("/openapi.json")).json()
    writes = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method.upper() in ("POST", "PUT", "PATCH", "DELETE") and operations[method].get("security")
    }
    assert writes == set(OTHER_AGENT) | OPEN_TO_AGENTS, "a write route without a decision in this test"
    for route, scene in OTHER_AGENT.items():
        made = scene(hq)
        identity, path, body = await made if asyncio.iscoroutine(made) else made
        before, received = await snapshot(hq), len(hq.fleet.received())
        response = await hq.client.request(route[0], path, headers=auth(identity), json=body)
        assert_json_error(response, 403, "forbidden")
        assert await snapshot(hq) == before, route
        assert len(hq.fleet.received()) == received, route
    # The same routes with the agent's own scope are allowed (the 403s above are about whose, not what).
    own = await hq.client.post("/v1/heartbeats/nx-expert/seen", headers=auth("nx-expert"))
    assert own.status_code == 200, own.text


# --- oversized bodies -----------------------------------------------------------------------------


async def test_every_body_route_refuses_an_oversized_body_with_a_json_413(hq: Hq) -> None:
    document = (await hq.client.get("/openapi.json")).json()
    limit = hq.services.config.api.max_body_bytes
    with_body = [
        (method.upper(), path.format(**PATH_VALUES))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    ]
    assert ("POST", "/v1/delegations") in with_body and ("PATCH", "/v1/tasks/1") in with_body
    oversized = b'{"message": "' + b"x" * limit + b'"}'

    async def chunks() -> Any:  # no Content-Length: the cap must hold while reading
        for start in range(0, len(oversized), 65_536):
            yield oversized[start : start + 65_536]

    for method, path in with_body:
        headers = {**auth("operator"), "Content-Type": "application/json"}
        assert_json_error(await hq.client.request(method, path, headers=headers, content=oversized), 413)
        assert_json_error(await hq.client.request(method, path, headers=headers, content=chunks()), 413)
        # Without a token the body is never read: 401, whatever its size.
        assert_json_error(await hq.client.request(method, path, content=oversized), 401)
    assert await hq.stored() == [] and hq.fleet.received() == []
    health = await hq.client.get("/healthz")
    assert health.status_code == 200
