"""scripts/step-result.sh, run as an agent's skill runs it, against a real API over a simulated fleet."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bot.api import LoopbackApi
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import RELEASE_LEGACY
from tests.conftest import API_TOKENS, ROOT, ServicesOnFleet
from tests.test_workflow_engine import ANTOINE, chain

SCRIPT = ROOT / "scripts" / "step-result.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("python3") is None, reason="step-result.sh needs curl and python3"
)


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Hq:
    api: LoopbackApi
    services: Services

    async def run(self, *args: str, identity: str = "nx-expert", stdin: str | None = None) -> Run:
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ATOMIZER_API_URL": self.api.url}
        env["ATOMIZER_API_TOKEN"] = API_TOKENS[identity]
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT), *args, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate(stdin.encode() if stdin is not None else b"")
        assert process.returncode is not None
        return Run(process.returncode, out.decode(), err.decode())


@pytest.fixture
async def hq(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[Hq]:
    # 2026.2.12: no completion signal at all, so the agent's own report is what ends its step.
    services, _ = await services_on_fleet(release=RELEASE_LEGACY)
    api = LoopbackApi(services, settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES]))
    await api.start("127.0.0.1", 0)
    try:
        yield Hq(api, services)
    finally:
        await api.stop()


async def test_the_agent_reports_its_output_and_the_next_step_receives_it(hq: Hq) -> None:
    engine = hq.services.workflows
    run = await engine.start(ANTOINE, chain("nx-expert", "optimizer"), {})
    output = 'Mesh: /data/m2.bdf, 42,118 elements\n"CQUAD8" mostly; $(not run) `nor this`'

    done = await hq.run(run.display_id, "s0", "ok", "-", stdin=output)

    assert done.code == 0, done.err
    assert done.out == f"recorded: s0 of {run.display_id} is succeeded\n"
    detail = await engine.get(run.display_id)
    step = detail.step("s0")
    assert (step.status, step.output, step.output_source) == ("succeeded", output, "api")
    assert detail.step("s1").status in ("running", "dispatching")


async def test_another_agent_cannot_report_a_step_that_is_not_its_own(hq: Hq) -> None:
    run = await hq.services.workflows.start(ANTOINE, chain("nx-expert"), {})

    refused = await hq.run(run.display_id, "s0", "ok", "done", identity="manager")

    assert refused.code == 1 and refused.out == ""
    assert refused.err.startswith("refused: ")
    assert (await hq.services.workflows.get(run.display_id)).step("s0").status == "running"


async def test_a_failure_is_reported_with_its_reason(hq: Hq) -> None:
    run = await hq.services.workflows.start(ANTOINE, chain("nx-expert"), {})

    failed = await hq.run(run.display_id, "s0", "failed", "no NX licence free")

    assert failed.code == 0, failed.err
    step = (await hq.services.workflows.get(run.display_id)).step("s0")
    assert step.status == "failed" and step.error == "nx-expert reported a failure: no NX licence free"


async def test_the_attempt_named_in_the_hook_ties_the_result_to_it(hq: Hq) -> None:
    run = await hq.services.workflows.start(ANTOINE, chain("nx-expert"), {})

    stale = await hq.run(run.display_id, "s0#2", "ok", "from another attempt")
    assert stale.code == 1 and "is at attempt 1" in stale.err, stale.err
    done = await hq.run(run.display_id, "s0#1", "ok", "done")
    assert done.code == 0, done.err
    assert (await hq.services.workflows.get(run.display_id)).step("s0").output == "done"


async def test_bad_usage_is_exit_2_and_sends_nothing(hq: Hq) -> None:
    for args, why in (
        ((), "missing the run, the step and the outcome"),
        (("W-1", "s0"), "missing the outcome (ok or failed)"),
        (("W-1", "s0", "maybe"), "'maybe' is not an outcome; write ok or failed"),
        (("run-one", "s0", "ok"), "'run-one' is not a run; write W-3 or 3"),
        (("W-1", "Mesh Step", "ok"), "'Mesh Step' is not a step id"),
    ):
        bad = await hq.run(*args)
        assert bad.code == 2 and why in bad.err, (args, bad)
    unknown = await hq.run("W-999", "s0", "ok", "x")
    assert unknown.code == 2 and "W-999" in unknown.err, unknown
