"""scripts/delegate.sh, run as the agents' skills run it, against a real API over a simulated fleet."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from bot.api import LoopbackApi
from bot.authz import AccessLevel, Requester
from bot.delegation import chain_footer
from bot.services import Services
from bot.settings import HUMAN_IDENTITIES, Settings
from bot.simulator import SimulatedFleet
from tests.conftest import API_TOKENS, ROOT, ServicesOnFleet

SCRIPT = ROOT / "scripts" / "delegate.sh"
TECHNICAL = "channel:100000000000000101"
OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("python3") is None, reason="delegate.sh needs curl and python3"
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
    fleet: SimulatedFleet

    def env(self, identity: str | None = "manager", **extra: str) -> dict[str, str]:
        """What an agent's skill has: PATH, the API's address and its own token (nothing of the test's)."""
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ATOMIZER_API_URL": self.api.url, **extra}
        if identity is not None:
            env["ATOMIZER_API_TOKEN"] = API_TOKENS[identity]
        return env

    async def run(self, *args: str, identity: str | None = "manager", env: dict[str, str] | None = None) -> Run:
        # The API serves from this event loop, so the script must be awaited, not waited for.
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(identity) if env is None else env,
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return Run(process.returncode, out.decode(), err.decode())

    async def stored(self) -> list[str]:
        return [d.display_id for d in await self.services.delegation.recent(limit=100)]


@pytest.fixture
async def hq(services_on_fleet: ServicesOnFleet, settings: Settings) -> AsyncIterator[Hq]:
    services, fleet = await services_on_fleet()
    api = LoopbackApi(services, settings.api_identities([*services.config.agent_names, *HUMAN_IDENTITIES]))
    await api.start("127.0.0.1", 0)
    try:
        yield Hq(api, services, fleet)
    finally:
        await api.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)


# --- results -----------------------------------------------------------------------------------


async def test_accepted(hq: Hq) -> None:
    run = await hq.run("nx-expert", "Mesh the M2 mirror")
    assert run.code == 0, run
    [hook] = hq.fleet.received()
    [delegation_id] = await hq.stored()
    assert run.out == f"accepted by nx-expert ({delegation_id}, runId {hook.run_id})\n"
    assert run.err == ""
    assert (hook.agent, hook.body["message"]) == ("nx-expert", "Mesh the M2 mirror" + chain_footer(delegation_id))
    assert (hook.body["deliver"], hook.body["channel"], hook.body["to"]) == (True, "discord", TECHNICAL)
    delegation = await hq.services.delegation.get(delegation_id)
    assert (delegation.requester, delegation.front_end) == ("manager", "api")


async def test_parent_records_the_chain_and_says_under_which(hq: Hq) -> None:
    received = await hq.services.delegation.delegate(OPERATOR, "tech-lead", "Plan the M2 study")
    assert received.delegation is not None and received.delegation.display_id == "D-1"
    run = await hq.run("optimizer", "Tune the M2 support", "--parent", "D-1", identity="tech-lead")
    assert run.code == 0, run
    [hook] = hq.fleet.received("optimizer")
    assert run.out == f"accepted by optimizer (D-2 under D-1, runId {hook.run_id})\n"
    child = await hq.services.delegation.get("D-2")
    assert (child.parent_id, child.root_id, child.depth) == (1, 1, 2)
    # optimizer hangs its part under D-2 as its hook told it, but not under D-1: that was tech-lead's
    run = await hq.run("nx-expert", "Mesh it", "--parent=d-1", identity="optimizer")
    assert (run.code, run.out) == (1, "")
    assert run.err.startswith("refused: D-1 was delegated to tech-lead, not to optimizer")
    run = await hq.run("nx-expert", "Mesh it", "--parent", "D-2", identity="optimizer")
    assert run.code == 0 and run.out.startswith("accepted by nx-expert (D-3 under D-2, runId"), run


async def test_a_chain_past_its_cap_is_refused(hq: Hq) -> None:
    await hq.services.delegation.delegate(OPERATOR, "manager", "Run the M2 study")
    assert (await hq.run("tech-lead", "Plan it", "--parent", "D-1", identity="manager")).code == 0
    assert (await hq.run("optimizer", "Tune it", "--parent", "D-2", identity="tech-lead")).code == 0
    run = await hq.run("nx-expert", "Mesh it", "--parent", "D-3", identity="optimizer")
    assert run.code == 1 and run.err.startswith("refused: chain D-1 may not go deeper: D-3 is at depth 3"), run
    assert hq.fleet.received("nx-expert") == []


@pytest.mark.parametrize("args", [["--parent"], ["--parent", "--no-deliver"], ["--parent= "]])
async def test_parent_without_an_id_is_a_usage_error(hq: Hq, args: list[str]) -> None:
    run = await hq.run("nx-expert", "Mesh it", *args)
    assert run.code == 2 and "--parent needs a delegation id, e.g. --parent D-12" in run.err, run
    assert hq.fleet.received() == []


async def test_refused_names_who_could(hq: Hq) -> None:
    run = await hq.run("manager", "Approve the budget", identity="tech-lead")
    assert run.code == 1, run
    assert run.out == ""
    assert run.err.startswith("refused: tech-lead may not delegate to manager")
    assert "a person with the operator or admin role" in run.err
    assert run.err.count("\n") == 1
    assert hq.fleet.received() == []
    rows = await hq.services.store.fetchall("SELECT actor, subject, decision FROM audit_log")
    assert [tuple(row) for row in rows] == [("tech-lead", "manager", "refused")]


async def test_queued_while_the_agent_restarts(hq: Hq) -> None:
    await hq.fleet.take_down("webster")
    run = await hq.run("webster", "Find the CTE of Zerodur Class 0 between 20 and 40 °C")
    assert run.code == 0, run
    [delegation_id] = await hq.stored()
    assert run.out.startswith("queued: webster cannot take it now: connection refused")
    assert run.out.endswith(f"; will retry for 10 min ({delegation_id})\n")
    assert (await hq.services.delegation.get(delegation_id)).status == "queued"


async def test_failed_delegation_exits_1(hq: Hq) -> None:
    hq.fleet.spec("webster").hooks_enabled = False
    run = await hq.run("webster", "Find the CTE")
    assert run.code == 1, run
    [delegation_id] = await hq.stored()
    assert run.err.startswith(f"failed: {delegation_id} to webster: ")
    assert run.out == ""


# --- arguments, as the old script took them ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "to"),
    [
        (["--channel", "100000000000000999"], "channel:100000000000000999"),  # bare: refused as unknown
        (["--channel=100000000000000102"], "channel:100000000000000102"),
        (["--channel", " 100000000000000103 "], "channel:100000000000000103"),
        (["--channel", "#task-board"], "channel:100000000000000102"),
        (["--no-deliver", "--deliver", "--channel", "<#100000000000000104>"], "channel:100000000000000104"),
    ],
)
async def test_channel_becomes_an_explicit_channel_target(hq: Hq, args: list[str], to: str) -> None:
    run = await hq.run("nx-expert", "Mesh the M2 mirror", *args)
    assert run.code == 0, run
    [hook] = hq.fleet.received("nx-expert")
    assert (hook.body["channel"], hook.body["to"]) == ("discord", to)


async def test_options_may_come_first(hq: Hq) -> None:
    run = await hq.run("--channel", "100000000000000102", "nx-expert", "Mesh the M2 mirror")
    assert run.code == 0, run
    assert hq.fleet.received("nx-expert")[0].body["to"] == "channel:100000000000000102"


async def test_no_deliver_sends_neither_channel_nor_to(hq: Hq) -> None:
    run = await hq.run("nx-expert", "Mesh the M2 mirror", "--no-deliver")
    assert run.code == 0, run
    [hook] = hq.fleet.received("nx-expert")
    assert hook.body["deliver"] is False
    assert "channel" not in hook.body and "to" not in hook.body


@pytest.mark.parametrize(
    "message",
    [
        'He said "mesh it"; it\'s `uname` and $(rm -rf ~) and $HOME \\ \\n',
        "line one\nline two\n\ttabbed\n",
        "Zerodur Class 0, 20–40 °C, ±0.007 ppm/K 🚀",
        "-starts with a dash",
        '{"to": "manager", "message": "injected"}',
    ],
)
async def test_the_instruction_arrives_exactly_as_written(hq: Hq, message: str) -> None:
    run = await hq.run("nx-expert", message)
    assert run.code == 0, run
    [hook] = hq.fleet.received()
    assert hook.agent == "nx-expert"
    # the service strips surrounding whitespace; the chain footer follows
    assert hook.body["message"] == message.strip() + chain_footer("D-1")


async def test_double_dash_ends_the_options(hq: Hq) -> None:
    run = await hq.run("--no-deliver", "--", "nx-expert", "--deliver the mesh")
    assert run.code == 0, run
    [hook] = hq.fleet.received()
    assert (hook.body["message"], hook.body["deliver"]) == ("--deliver the mesh" + chain_footer("D-1"), False)


async def test_help(hq: Hq) -> None:
    for flag in ("--help", "-h"):
        run = await hq.run(flag, identity=None)
        assert run.code == 0, run
        assert run.out.startswith('usage: delegate.sh <agent> "<instruction>" [--channel ID] [--deliver|--no-deliver]')
        assert "ATOMIZER_API_TOKEN" in run.out and "ATOMIZER_API_URL" in run.out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "missing the agent and the instruction"),
        (["nx-expert"], "missing the instruction"),
        (["nx-expert", "Mesh", "the", "mirror"], "put the instruction in quotes"),
        (["nx-expert", "Mesh it", "--channel"], "--channel needs a channel id"),
        (["nx-expert", "Mesh it", "--channel", "--no-deliver"], "--channel needs a channel id"),
        (["nx-expert", "Mesh it", "--channel", " "], "--channel needs a channel id"),
        (["nx-expert", "Mesh it", "--bogus"], "unknown option --bogus"),
        (["nx-expert", "Mesh it", "--channel", "100000000000000102", "--no-deliver"], "contradict"),
        (["", "Mesh it"], "the agent name is empty"),
    ],
)
async def test_usage_errors_exit_2(hq: Hq, args: list[str], says: str) -> None:
    run = await hq.run(*args)
    assert run.code == 2, run
    assert run.out == ""
    assert says in run.err
    assert "usage: delegate.sh" in run.err
    assert hq.fleet.received() == []


async def test_unknown_agent_exits_2_with_the_closest_match(hq: Hq) -> None:
    run = await hq.run("nx-expret", "Mesh it")
    assert run.code == 2, run
    assert run.err.startswith("delegate.sh: no agent called 'nx-expret'. Did you mean 'nx-expert'?")


async def test_empty_instruction_exits_2(hq: Hq) -> None:
    run = await hq.run("nx-expert", "  ")
    assert run.code == 2, run
    assert "empty" in run.err
    assert await hq.stored() == []


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
async def test_missing_token_exits_2(hq: Hq, token: str | None) -> None:
    env = hq.env(identity=None)
    if token is not None:
        env["ATOMIZER_API_TOKEN"] = token
    run = await hq.run("nx-expert", "Mesh it", env=env)
    assert run.code == 2, run
    assert run.err.startswith("delegate.sh: ATOMIZER_API_TOKEN is not set")
    assert hq.fleet.received() == []


async def test_wrong_token_exits_2(hq: Hq) -> None:
    run = await hq.run("nx-expert", "Mesh it", env={**hq.env(), "ATOMIZER_API_TOKEN": "api-not-a-known-token-123"})
    assert run.code == 2, run
    assert "did not accept ATOMIZER_API_TOKEN: unknown token" in run.err
    assert "api-not-a-known-token-123" not in run.err


async def test_token_with_a_newline_is_refused_before_sending(hq: Hq) -> None:
    token = API_TOKENS["tech-lead"] + "\nX-Injected: 1"
    run = await hq.run("nx-expert", "Mesh it", env={**hq.env(), "ATOMIZER_API_TOKEN": token})
    assert run.code == 2, run
    assert "whitespace" in run.err
    assert await hq.stored() == []


async def test_api_unreachable_exits_1(hq: Hq, closed_port: int) -> None:
    run = await hq.run("nx-expert", "Mesh it", env={**hq.env(), "ATOMIZER_API_URL": f"http://127.0.0.1:{closed_port}"})
    assert run.code == 1, run
    assert run.err == (
        f"failed: cannot reach the atomizer-hq API at http://127.0.0.1:{closed_port} (connection refused); "
        "is atomizer-hq running, and ATOMIZER_API_URL right?\n"
    )


async def test_a_proxy_in_the_environment_is_not_used(hq: Hq, closed_port: int) -> None:
    """The token must not travel through a proxy: the loopback API is reached directly."""
    proxy = f"http://127.0.0.1:{closed_port}"
    run = await hq.run("nx-expert", "Mesh it", env={**hq.env(), "http_proxy": proxy, "HTTP_PROXY": proxy})
    assert run.code == 0, run


async def test_trailing_slash_in_the_url_is_fine(hq: Hq) -> None:
    run = await hq.run("nx-expert", "Mesh it", env={**hq.env(), "ATOMIZER_API_URL": hq.api.url + "/"})
    assert run.code == 0, run
