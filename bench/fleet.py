"""`python -m bench.fleet SPEC.json`: the simulated fleet in its own process, for the benchmarks.

SPEC is `{"token": …, "agents": [SimAgentSpec fields…], "readyz_delay_ms": {agent: ms}, "record": FILE}`
(`record`, optional: every accepted hook appended to FILE as a JSON line, as `simulate --record`). Prints READY
once every gateway listens, then serves until SIGTERM or SIGINT.

`readyz_delay_ms` is the one thing `atomizer-hq simulate` cannot do: a gateway that answers its
readiness probe late (a loaded host). The simulator's health routes answer at once, so this process
delays `/readyz` in front of the simulator's own router, without changing what it answers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from bot import simulator


def _delay_readyz(delays: dict[str, float]) -> None:
    gateway_class: Any = getattr(simulator, "_Gateway", None)
    route = getattr(gateway_class, "_route", None)
    if route is None:
        raise SystemExit("bench.fleet: the simulator no longer has _Gateway._route; update readyz_delay_ms")

    async def delayed(self: Any, request: Any) -> Any:
        delay = delays.get(self.spec.name, 0.0)
        if delay > 0 and request.path == "/readyz":
            await asyncio.sleep(delay / 1000)
        return await route(self, request)

    gateway_class._route = delayed


async def main(spec: dict[str, Any]) -> None:
    if spec.get("readyz_delay_ms"):
        _delay_readyz({k: float(v) for k, v in spec["readyz_delay_ms"].items()})
    record = Path(spec["record"]) if spec.get("record") else None
    specs = [simulator.SimAgentSpec(**a) for a in spec["agents"]]
    fleet = simulator.SimulatedFleet(specs, spec["token"], record_path=record)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    try:
        print("READY", flush=True)
        await stop.wait()
    finally:
        await fleet.stop()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
