"""The shipped workflows/m2-mirror-study.yaml end to end on the simulated fleet, from the CLI and from the API,
with its approval given in each (from Discord: tests/e2e/test_workflows_over_the_wire.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.api import LoopbackApi
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import RELEASE_LEGACY
from bot.workflows.loader import WorkflowCatalog
from tests.conftest import API_TOKENS, ROOT, FleetStarter, ServicesOnFleet
from tests.test_cli import cli_env, relocated_config, run_cli

ADMIN_TOKEN = "api-SECRET-admin-9f8e7d6c5b4a3210"
MESH = "m2_thermal.fem: 48,212 elements"
CTE = "Zerodur Class 0: CTE 0 ± 0.007 ppm/K"


def person(login: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment as `login` on the host (the CLI's requester is the host login)."""
    return cli_env(tmp_path, USER=login, LOGNAME=login)


async def test_the_shipped_study_from_the_command_line(start_fleet: FleetStarter, tmp_path: Path) -> None:
    # 2026.2.12 everywhere: no completion signal, so each step ends by its reported result.
    config, fleet = await start_fleet(release=RELEASE_LEGACY)
    base = ("--config", str(relocated_config(tmp_path, {a.name: a.port for a in config.agents})))

    async def cli(login: str, *args: str) -> tuple[int, str, str]:
        return await run_cli(*base, *args, env=person(login, tmp_path), cwd=ROOT)

    code, out, err = await cli("antoine", "workflow", "run", "m2-mirror-study", "--input", "mirror=M1")
    assert code == 0 and out.startswith("W-1 m2-mirror-study: running"), err
    # The parallel pair went out together; the join waits.
    assert fleet.received("nx-expert")[0].body["message"].startswith("Mesh the M1 mirror")
    assert "Zerodur Class 0" in fleet.received("webster")[0].body["message"]
    assert fleet.received("optimizer") == []

    assert (await cli("antoine", "workflow", "result", "W-1", "mesh", "--ok", MESH))[0] == 0
    assert fleet.received("optimizer") == []
    assert (await cli("antoine", "workflow", "result", "W-1", "material", "--ok", CTE))[0] == 0
    [thermal] = fleet.received("optimizer")
    assert f"Mesh: {MESH}" in thermal.body["message"] and f"Material: {CTE}" in thermal.body["message"]
    assert (await cli("antoine", "workflow", "result", "W-1", "thermal", "--ok", "8.1 nm RMS"))[0] == 0

    code, _, err = await cli("antoine", "workflow", "approve", "W-1", "review")
    assert code == 1 and "may not approve its own gate" in err and "Traceback" not in err
    assert fleet.received("secretary") == []
    code, out, err = await cli("maria", "workflow", "approve", "W-1", "review", "--reason", "within budget")
    assert code == 0 and "the gate is approved" in out, err
    [report] = fleet.received("secretary")
    assert "8.1 nm RMS" in report.body["message"] and report.body["to"] == "channel:100000000000000101"

    assert (await cli("antoine", "workflow", "result", "W-1", "report", "--ok", "posted"))[0] == 0
    code, out, _ = await cli("antoine", "workflow", "show", "W-1", "--json")
    shown = json.loads(out)
    assert shown["status"] == "succeeded"
    assert [(s["id"], s["status"]) for s in shown["steps"]] == [
        ("mesh", "succeeded"), ("material", "succeeded"), ("thermal", "succeeded"),
        ("review", "approved"), ("report", "succeeded"),
    ]  # fmt: skip
    assert [a["approver"] for a in shown["approvals"]] == ["maria@host"]
    for agent in ("nx-expert", "webster", "optimizer", "secretary"):
        assert len([h for h in fleet.received(agent) if h.path.endswith("/agent")]) == 1, agent


@pytest.fixture
async def api(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[tuple[Any, Any]]:
    services, fleet = await services_on_fleet(release=RELEASE_LEGACY)
    services.workflows.catalog = WorkflowCatalog(ROOT / "workflows")
    identities = settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES])
    identities["admin"] = SecretStr(ADMIN_TOKEN)
    loopback = LoopbackApi(services, identities)
    await loopback.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=loopback.url, timeout=10, trust_env=False) as client:
            yield client, fleet
    finally:
        await loopback.stop()


def bearer(identity: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN if identity == 'admin' else API_TOKENS[identity]}"}


async def test_the_shipped_study_over_the_api(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, fleet = api

    async def post(identity: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return await client.post(path, headers=bearer(identity), json=body)

    started = await post("operator", "/v1/workflow-runs", {"workflow": "m2-mirror-study", "inputs": {"mirror": "M3"}})
    assert started.status_code == 201, started.text
    steps = "/v1/workflow-runs/W-1/steps"
    assert (await post("nx-expert", f"{steps}/mesh/result", {"ok": True, "output": MESH})).status_code == 200
    assert (await post("operator", f"{steps}/material/result", {"ok": True, "output": CTE})).status_code == 200
    assert (await post("operator", f"{steps}/thermal/result", {"ok": True, "output": "8.1 nm"})).status_code == 200

    not_admin = await post("operator", f"{steps}/review/approve", {})
    assert not_admin.status_code == 403 and "who may: a person with the admin role" in not_admin.json()["detail"]
    approved = await post("admin", f"{steps}/review/approve", {"reason": "ok"})
    assert approved.status_code == 200 and approved.json()["decided"] is True, approved.text
    assert (await post("operator", f"{steps}/report/result", {"ok": True, "output": "posted"})).status_code == 200

    shown = (await client.get("/v1/workflow-runs/W-1", headers=bearer("operator"))).json()
    assert shown["status"] == "succeeded" and [a["approver"] for a in shown["approvals"]] == ["admin"]
    [thermal] = [h for h in fleet.received("optimizer") if h.path.endswith("/agent")]
    assert f"Mesh: {MESH}" in thermal.body["message"] and "the M3 mirror" in thermal.body["message"]
