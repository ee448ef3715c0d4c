#!/usr/bin/env python3
"""A stand-in for `systemctl --user` and `journalctl --user`, with its state in files, for tests.

    fake_systemctl.py --state-dir DIR [--journalctl] [--user] ARGS...

State in DIR (every file optional):
  units/<unit>        the unit's state (absent: inactive)
  journal/<unit>      its journal, one line per entry; start/stop/restart append to it
  calls.log           every invocation, one JSON list per line: ["systemctl", "start", "<unit>"]
  fail, fail@<unit>   start/stop/restart fail (exit 1) with the file's text, or systemctl's usual words
  crash@<unit>        start/restart exit 0, but the unit ends up failed
  no-bus              behave as when systemd is not running: "Failed to connect to bus: No medium found"
  no-session          as no-bus for systemctl; journalctl, which reads files rather than the bus, answers
                      "-- No entries --" and exit 0, as on a host without a systemd user session
  hang                never answer (for timeouts)
Exit codes as systemctl's: is-active 0 when active, 3 otherwise (printing the state); 1 on failure.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

NO_BUS = "Failed to connect to bus: No medium found"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--state-dir":
        print("usage: fake_systemctl.py --state-dir DIR [--journalctl] [--user] ARGS...", file=sys.stderr)
        return 2
    state_dir, rest = Path(argv[1]), argv[2:]
    mode = "systemctl"
    if rest[:1] == ["--journalctl"]:
        mode, rest = "journalctl", rest[1:]
    if rest[:1] == ["--user"]:
        rest = rest[1:]
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "calls.log").open("a", encoding="utf-8") as calls:
        calls.write(json.dumps([mode, *rest]) + "\n")
    if (state_dir / "hang").exists():
        threading.Event().wait()
    if (state_dir / "no-bus").exists() or ((state_dir / "no-session").exists() and mode == "systemctl"):
        print(NO_BUS, file=sys.stderr)
        return 1
    if (state_dir / "no-session").exists():
        print("-- No entries --")
        print("No journal files were found.", file=sys.stderr)
        return 0
    if mode == "journalctl":
        return journalctl(state_dir, rest)
    return systemctl(state_dir, rest)


def systemctl(state_dir: Path, args: list[str]) -> int:
    if len(args) < 2:
        print("Too few arguments.", file=sys.stderr)
        return 1
    verb, units = args[0], args[1:]
    if verb == "is-active":
        states = [read_state(state_dir, unit) for unit in units]
        for state in states:
            print(state)
        return 0 if "active" in states else 3
    if verb not in ("start", "stop", "restart"):
        print(f"Unknown command verb {verb}.", file=sys.stderr)
        return 1
    for unit in units:
        failure = flag(state_dir, "fail", unit)
        if failure is not None:
            if verb != "stop":
                write_state(state_dir, unit, "failed")
            print(failure.strip() or default_failure(verb, unit), file=sys.stderr)
            return 1
        if verb == "stop":
            write_state(state_dir, unit, "inactive")
            journal(state_dir, unit, f"Stopped {unit}.")
        else:
            crashed = flag(state_dir, "crash", unit) is not None
            write_state(state_dir, unit, "failed" if crashed else "active")
            journal(state_dir, unit, f"Started {unit}." + (" Main process exited, status=1/FAILURE" if crashed else ""))
    return 0


def journalctl(state_dir: Path, args: list[str]) -> int:
    unit = args[args.index("-u") + 1] if "-u" in args else None
    count = int(args[args.index("-n") + 1]) if "-n" in args else 10
    path = state_dir / "journal" / unit if unit else None
    lines = path.read_text(encoding="utf-8").splitlines() if path and path.exists() else []
    if not lines:
        print("-- No entries --")
    for line in lines[-count:]:
        print(f"2026-03-01T09:00:00+0000 host openclaw[100]: {line}")
    return 0


def default_failure(verb: str, unit: str) -> str:
    if verb == "stop":
        return f"Failed to stop {unit}: Access denied"
    return (
        f"Job for {unit} failed because the control process exited with error code.\n"
        f'See "systemctl --user status {unit}" and "journalctl --user -xeu {unit}" for details.'
    )


def flag(state_dir: Path, name: str, unit: str) -> str | None:
    for path in (state_dir / f"{name}@{unit}", state_dir / name):
        if path.exists():
            return path.read_text(encoding="utf-8")
    return None


def read_state(state_dir: Path, unit: str) -> str:
    path = state_dir / "units" / unit
    return path.read_text(encoding="utf-8").strip() if path.exists() else "inactive"


def write_state(state_dir: Path, unit: str, state: str) -> None:
    (state_dir / "units").mkdir(exist_ok=True)
    (state_dir / "units" / unit).write_text(state + "\n", encoding="utf-8")


def journal(state_dir: Path, unit: str, line: str) -> None:
    (state_dir / "journal").mkdir(exist_ok=True)
    with (state_dir / "journal" / unit).open("a", encoding="utf-8") as log:
        log.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
