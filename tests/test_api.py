"""The loopback API skeleton, through a real server on 127.0.0.1 and a real HTTP client."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import BaseModel, Field

from bot.api import LoopbackApi, Route, is_loopback_host
from bot.authz import Requester
from bot.errors import AgentUnavailable, AtomizerError, InvalidInput, NotAllowed, UnknownAgent
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from tests.conftest import API_TOKENS

MANAGER = {"Authorization": f"Bearer {API_TOKENS['manager']}"}


# --- throwaway routes: one of each kind of input and failure ------------------------------------


class EchoIn(BaseModel):
    name: str
    count: int = Field(ge=1)


class EchoOut(BaseModel):
    said: str
    by: str


class SearchQuery(BaseModel):
    q: str
    limit: int = Field(default=10, ge=1, le=100, description="at most this many")
    tags: list[str] = Field(default_factory=list)


class SearchOut(BaseModel):
    q: str
    limit: int
    tags: list[str]


class Item(BaseModel):
    item_id: int


FAILURES: dict[str, AtomizerError] = {
    "unknown-agent": UnknownAgent("no agent called 'nope'"),
    "not-allowed": NotAllowed("tech-lead may not delegate to manager; ask an operator"),
    "unavailable": AgentUnavailable("webster", "connection refused", sent=False),
    "invalid": InvalidInput("bad target"),
}


def add_test_routes(api: LoopbackApi) -> None:
    @api.route("POST", "/test/echo", summary="Echo", body=EchoIn, response=EchoOut, status=201)
    async def echo(request: web.Request, requester: Requester, body: EchoIn) -> EchoOut:
        return EchoOut(said=body.name * body.count, by=requester.name)

    @api.route("GET", "/test/search", summary="Search", query=SearchQuery, response=SearchOut)
    async def search(request: web.Request, requester: Requester, query: SearchQuery) -> SearchOut:
        return SearchOut(**query.model_dump())

    @api.route("GET", r"/test/items/{item_id:\d+}", summary="One item", response=Item)
    async def item(request: web.Request, requester: Requester, data: None) -> Item:
        return Item(item_id=int(request.match_info["item_id"]))

    @api.route("GET", "/test/fail/{kind}", summary="Raise a core error", response=Item)
    async def fail(request: web.Request, requester: Requester, data: None) -> Item:
        raise FAILURES[request.match_info["kind"]]

    @api.route("GET", "/test/boom", summary="Raise an unexpected error", response=Item)
    async def boom(request: web.Request, requester: Requester, data: None) -> Item:
        raise RuntimeError("boom: internal state the caller must not see")

    @api.route("GET", "/test/wrong-model", summary="Return the wrong type", response=Item)
    async def wrong_model(request: web.Request, requester: Requester, data: None) -> Any:
        return EchoOut(said="x", by="y")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def identities(services: Services, settings: Settings) -> dict[str, Any]:
    return settings.api_identities(services.config.agent_names + list(HUMAN_IDENTITIES))


@pytest.fixture
async def api(services: Services, identities: dict[str, Any]) -> AsyncIterator[LoopbackApi]:
    api = LoopbackApi(services, identities)
    add_test_routes(api)
    await api.start("127.0.0.1", 0)
    yield api
    await api.stop()


@pytest.fixture
async def client(api: LoopbackApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The answer is our JSON error shape with this status and code; returns the detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


# --- public routes -----------------------------------------------------------------------------


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "database": "ok", "checks": {"database": "ok"}, "version": "0.1.0"}


async def test_healthz_reports_every_registered_part(client: httpx.AsyncClient, services: Services) -> None:
    async def discord_down() -> str | None:
        return "not connected to Discord"

    async def scheduler_ok() -> str | None:
        return None

    services.health.register("discord", discord_down)
    services.health.register("scheduler", scheduler_ok)
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "database": "ok", "discord": "error: not connected to Discord", "scheduler": "ok",
    }  # fmt: skip


async def test_metrics_are_prometheus_text_from_the_records(client: httpx.AsyncClient, services: Services) -> None:
    await services.store.execute(
        "INSERT INTO agent_health (agent, observed, observed_since, confirmed, confirmed_since, last_probe_at, "
        "latency_ms) VALUES ('webster', 'down', 'x', 'down', 'x', 'x', NULL), ('manager', 'ready', 'x', 'up', 'x', "
        "'x', 12.5)"
    )
    await services.store.execute(
        "INSERT INTO heartbeat_runs (agent, slot, trigger, status, level, started_at) "
        "VALUES ('manager', 's1', 'schedule', 'run_failed', 'accepted', 's1')"
    )
    services.health.discord.calls["PATCH"] = 3
    services.health.discord.rate_limited = 1
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'atomizer_agent_up{agent="webster"} 0.0' in text and 'atomizer_agent_up{agent="manager"} 1.0' in text
    assert 'atomizer_probe_latency_seconds{agent="manager"} 0.0125' in text
    assert 'atomizer_heartbeat_runs_total{agent="manager",level="accepted",status="run_failed"} 1.0' in text
    assert 'atomizer_discord_api_calls_total{method="PATCH"} 3.0' in text
    assert "atomizer_discord_rate_limited_total 1.0" in text


async def test_healthz_answers_503_when_the_database_is_closed(client: httpx.AsyncClient, services: Services) -> None:
    await services.store.close()
    response = await client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["database"].startswith("error: ")
    assert body["version"] == "0.1.0"


def iter_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in iter_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in iter_refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


async def test_openapi_document_describes_the_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["version"] == "0.1.0"
    paths = doc["paths"]
    schemas = doc["components"]["schemas"]
    assert {"ErrorResponse", "WhoAmI", "Health", "EchoIn", "EchoOut"} <= set(schemas)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}

    healthz = paths["/healthz"]["get"]
    assert healthz["security"] == []
    assert set(healthz["responses"]) >= {"200", "503"}
    whoami = paths["/v1/whoami"]["get"]
    assert whoami["security"] == [{"bearerAuth": []}]
    assert whoami["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WhoAmI"
    }
    assert whoami["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "/openapi.json" in paths

    echo = paths["/test/echo"]["post"]
    assert echo["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EchoIn"}
    assert set(echo["responses"]) >= {"201", "400", "401", "413", "default"}
    assert echo["operationId"] == "echo"

    item = paths["/test/items/{item_id}"]["get"]  # aiohttp's regex is not part of the documented path
    assert item["parameters"] == [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    search = {p["name"]: p for p in paths["/test/search"]["get"]["parameters"]}
    assert search["q"]["in"] == "query" and search["q"]["required"] is True
    assert search["limit"]["required"] is False and search["limit"]["description"] == "at most this many"

    refs = iter_refs(doc)
    assert refs
    for ref in refs:
        assert isinstance(resolve(doc, ref), dict), ref
    json.dumps(doc)  # plain JSON all the way down


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "kind", "level"),
    [
        ("manager", "agent", "none"),
        ("tech-lead", "agent", "none"),
        ("nx-expert", "agent", "none"),
        ("operator", "person", "operator"),
    ],
)
async def test_whoami_tells_the_identity_behind_each_token(
    client: httpx.AsyncClient, identity: str, kind: str, level: str
) -> None:
    response = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {API_TOKENS[identity]}"})
    assert response.status_code == 200
    assert response.json() == {"identity": identity, "kind": kind, "level": level}


async def test_admin_token_gives_admin_level(services: Services) -> None:
    from pydantic import SecretStr

    api = LoopbackApi(services, {"admin": SecretStr("admin-token-0123456789abcdef")})
    requester = api.authenticate("Bearer admin-token-0123456789abcdef")
    assert (requester.kind, requester.name, requester.level.label) == ("person", "admin", "admin")


@pytest.mark.parametrize("header", [None, "", "Bearer", f"Basic {API_TOKENS['manager']}"])
async def test_missing_token_is_401(client: httpx.AsyncClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await client.get("/v1/whoami", headers=headers)
    detail = assert_error(response, 401, "unauthorized")
    assert detail == "missing Authorization: Bearer <token>"
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "token",
    [
        "api-SECRET-manager-5f1d2c3b4a59688",  # one character off
        API_TOKENS["manager"] + "x",
        API_TOKENS["manager"][:-1],
        "nope",
    ],
)
async def test_wrong_token_is_401(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert assert_error(response, 401, "unauthorized") == "unknown token"


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/whoami", headers={"Authorization": f"bearer {API_TOKENS['manager']}"})
    assert response.json()["identity"] == "manager"


@pytest.mark.parametrize("path", ["/v1/whoami", "/healthz", "/nowhere"])
@pytest.mark.parametrize("key", ["token", "access_token", "API_KEY"])
async def test_token_in_query_is_refused(client: httpx.AsyncClient, path: str, key: str) -> None:
    response = await client.get(path, params={key: API_TOKENS["manager"]}, headers=MANAGER)
    detail = assert_error(response, 400, "token_in_query")
    assert "Authorization: Bearer" in detail


# --- HTTP-level errors -------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, MANAGER])
async def test_unknown_route_is_404_json(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get("/v1/nowhere", headers=headers)
    assert "/openapi.json" in assert_error(response, 404, "not_found")


async def test_wrong_method_is_405_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/whoami", headers=MANAGER, json={})
    detail = assert_error(response, 405, "method_not_allowed")
    assert "GET" in detail
    assert response.headers["Allow"] == "GET"


async def test_body_over_the_cap_is_413(client: httpx.AsyncClient, api: LoopbackApi) -> None:
    cap = api.config.max_body_bytes
    body = json.dumps({"name": "x" * (cap + 10), "count": 1})
    response = await client.post("/test/echo", headers=MANAGER, content=body)
    detail = assert_error(response, 413, "payload_too_large")
    assert str(cap) in detail


async def test_body_just_under_the_cap_is_read(client: httpx.AsyncClient, api: LoopbackApi) -> None:
    filler = api.config.max_body_bytes - 100
    response = await client.post("/test/echo", headers=MANAGER, content=json.dumps({"name": "x" * filler, "count": 1}))
    assert response.status_code == 201


# --- input -------------------------------------------------------------------------------------


async def test_valid_body_reaches_the_handler(client: httpx.AsyncClient) -> None:
    # curl -d sends application/x-www-form-urlencoded: the body is read as JSON whatever the type says.
    response = await client.post(
        "/test/echo",
        headers={**MANAGER, "Content-Type": "application/x-www-form-urlencoded"},
        content=b'{"name": "ab", "count": 2}',
    )
    assert response.status_code == 201
    assert response.json() == {"said": "abab", "by": "manager"}


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\xff\xfe", b"[[[[[["])
async def test_invalid_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post("/test/echo", headers=MANAGER, content=raw)
    assert assert_error(response, 400, "invalid_json").startswith("the request body is not valid JSON: ")


async def test_empty_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/test/echo", headers=MANAGER)
    assert "empty" in assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "a", "count": 0}, "count: Input should be greater than or equal to 1"),
        ({"count": 1}, "name: Field required"),
        ({"name": "a", "count": "many"}, "count: Input should be a valid integer"),
        ([1, 2], "(the body): Input should be an object"),
    ],
)
async def test_body_failing_validation_names_the_field(client: httpx.AsyncClient, body: Any, named: str) -> None:
    response = await client.post("/test/echo", headers=MANAGER, json=body)
    detail = assert_error(response, 400, "invalid_input")
    assert detail.startswith("invalid body: ")
    assert named in detail


async def test_query_model_is_validated(client: httpx.AsyncClient) -> None:
    response = await client.get("/test/search", headers=MANAGER, params={"q": "mesh", "tags": "nx"})
    assert response.json() == {"q": "mesh", "limit": 10, "tags": ["nx"]}
    response = await client.get("/test/search", headers=MANAGER, params=[("q", "a"), ("tags", "x"), ("tags", "y")])
    assert response.json()["tags"] == ["x", "y"]
    response = await client.get("/test/search", headers=MANAGER, params={"q": "mesh", "limit": "lots"})
    assert "limit: Input should be a valid integer" in assert_error(response, 400, "invalid_input")


async def test_path_parameter_with_regex(client: httpx.AsyncClient) -> None:
    assert (await client.get("/test/items/42", headers=MANAGER)).json() == {"item_id": 42}
    assert_error(await client.get("/test/items/abc", headers=MANAGER), 404, "not_found")


# --- handler failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("unknown-agent", 404, "unknown_agent"),
        ("not-allowed", 403, "forbidden"),
        ("unavailable", 503, "agent_unavailable"),
        ("invalid", 400, "invalid_input"),
    ],
)
async def test_core_errors_map_to_their_status(client: httpx.AsyncClient, kind: str, status: int, code: str) -> None:
    response = await client.get(f"/test/fail/{kind}", headers=MANAGER)
    assert assert_error(response, status, code) == str(FAILURES[kind])


async def test_unexpected_error_is_500_generic_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.get("/test/boom", headers=MANAGER)
    detail = assert_error(response, 500, "internal")
    assert "boom" not in detail and "RuntimeError" not in detail
    logged = [r for r in caplog.records if r.name == "bot.api" and r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], RuntimeError)
    ref = detail.split("(ref ")[1].split(")")[0]
    assert ref in logged[0].getMessage()


async def test_handler_returning_the_wrong_model_is_500(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/test/wrong-model", headers=MANAGER), 500, "internal")


# --- secrecy -----------------------------------------------------------------------------------


async def test_tokens_appear_in_no_answer_and_no_log(
    api: LoopbackApi, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = API_TOKENS["manager"]
    near_miss = token[:-1] + "0"
    answers = [
        await client.get("/v1/whoami", headers={"Authorization": f"Bearer {near_miss}"}),
        await client.get("/v1/whoami", headers={"Authorization": f"Basic {token}"}),
        await client.get("/v1/whoami", params={"token": token}),
        await client.get("/v1/whoami", params={"access_token": token}, headers=MANAGER),
        await client.get(f"/nowhere/{token}", headers=MANAGER),
        await client.post("/v1/whoami", headers=MANAGER),
        await client.post("/test/echo", headers=MANAGER, content=b"{" + token.encode()),
        await client.post("/test/echo", headers=MANAGER, json={"name": token, "count": "x"}),
        await client.get("/test/fail/not-allowed", headers=MANAGER),
        await client.get("/test/boom", headers=MANAGER),
        await client.get("/v1/whoami", headers=MANAGER),
    ]
    await api.stop()  # every access-log line is written once the server has finished its requests
    # The test client's own loggers (httpx, httpcore) are the caller's business, not the API's.
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "bot.api.access" for r in records)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in records)
    for secret in API_TOKENS.values():
        assert secret not in logged
        for answer in answers:
            assert secret not in answer.text, answer.text
    assert near_miss not in logged


# --- binding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "", "192.168.1.10", "::", "example.com"])
async def test_non_loopback_bind_is_refused(services: Services, identities: dict[str, Any], host: str) -> None:
    api = LoopbackApi(services, identities)
    with pytest.raises(InvalidInput, match="loopback API"):
        await api.start(host, 0)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("10.0.0.1", False)],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


async def test_default_host_is_loopback_and_port_is_real(api: LoopbackApi) -> None:
    assert api.config.host == "127.0.0.1"
    assert api.port > 0
    assert api.url == f"http://127.0.0.1:{api.port}"


async def test_port_taken_is_a_clear_error(api: LoopbackApi, services: Services, identities: dict[str, Any]) -> None:
    second = LoopbackApi(services, identities)
    with pytest.raises(AtomizerError, match=r"cannot listen on 127\.0\.0\.1"):
        await second.start("127.0.0.1", api.port)


# --- registration ------------------------------------------------------------------------------


async def _noop(request: web.Request, requester: Requester, data: None) -> Item:
    return Item(item_id=1)


def test_route_rejects_a_body_on_get() -> None:
    with pytest.raises(ValueError, match="take a body"):
        Route("GET", "/x", _noop, summary="x", response=Item, body=EchoIn)


def test_route_rejects_body_and_query_together() -> None:
    with pytest.raises(ValueError, match="not both"):
        Route("POST", "/x", _noop, summary="x", response=Item, body=EchoIn, query=SearchQuery)


async def test_operation_ids_are_unique(services: Services, identities: dict[str, Any]) -> None:
    api = LoopbackApi(services, identities)
    api.route("GET", "/a", summary="a", response=Item)(_noop)
    with pytest.raises(ValueError, match="_noop"):
        api.route("GET", "/b", summary="b", response=Item)(_noop)


async def test_routes_added_behind_our_back_still_need_a_token(services: Services, identities: dict[str, Any]) -> None:
    """Default deny: a route added straight to the aiohttp router is not public by accident."""
    api = LoopbackApi(services, identities)

    async def raw(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    api.app.router.add_get("/raw", raw)
    await api.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=api.url) as client:
            assert_error(await client.get("/raw"), 401, "unauthorized")
            assert (await client.get("/raw", headers=MANAGER)).json() == {"ok": True}
    finally:
        await api.stop()
