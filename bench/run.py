"""`make bench` / `python -m bench.run [NAME…]`: run the benchmarks, print one table, write bench/results.json.

Every comparison is measured in the same run, on loopback, against simulated gateways in another
process. Exit status: 0 when every figure meets its floor, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import RESULTS_PATH, Bench, Result, table, write_results

BENCHMARKS = (
    "delegate_throughput",
    "delegate_overhead",
    "status_fanout",
    "interaction_ack",
    "board_burst",
    "footprint",
    "workflow_fanout",
    "approval_to_dispatch",
    "workflow_crash",
    "route_decision",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"some of: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH, help="where to write the figures")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    results: list[Result] = []
    started = time.perf_counter()
    for name in args.names or BENCHMARKS:
        print(f"· {name} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            bench = Bench(name, Path(tmp))
            module = importlib.import_module(f"bench.{name}")
            try:
                asyncio.run(module.run(bench))
            except Exception as exc:
                traceback.print_exc()
                bench.add(Result(name, float("nan"), "-", None, None, "-", False, f"crashed: {exc!r}"))
        results += bench.results
        print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    print(table(results))
    print(f"\n{len(results)} figures in {time.perf_counter() - started:.0f} s; written to {args.results}")
    write_results(results, args.results, merge=bool(args.names))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
