"""Every command the README and docs/ show still exists and parses: no stale instruction survives.

Each `atomizer-hq …` line in a shell block (and each inline `atomizer-hq …` in backquotes) is parsed by
the real argument parser; each `make X` names a real target; the scripts named exist. Commands with
no side effects are also run (`check-config`, `--help`); the rest are run by other tests (status,
delegate, demo, doctor, install-systemd --dry-run, …) or by CI (`make test`).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from bot.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```(?:sh|bash)?\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:\.venv/bin/)?atomizer-hq [^`]+)`")
_PLACEHOLDER = re.compile(r"…|<[^>]+>|\[|\||COMMAND\b|AGENT\b|MESSAGE\b|ID\b")


def shell_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in _BLOCK.findall(text):
            for line in block.splitlines():
                line = line.split("  #")[0].strip().removeprefix("$ ")
                if line:
                    found.append((doc.name, line))
        found += [(doc.name, inline) for inline in _INLINE.findall(text)]
    return found


def atomizer_commands() -> list[tuple[str, str]]:
    commands = []
    for doc, line in shell_lines():
        for part in re.split(r"\s*&&\s*", line):
            words = part.split()
            if words and words[0].endswith("atomizer-hq") and not _PLACEHOLDER.search(part):
                commands.append((doc, part))
    return commands


def make_targets() -> list[tuple[str, str]]:
    targets = []
    for doc, line in shell_lines():
        targets += [(doc, t) for t in re.findall(r"(?:^|&&\s*)make ([a-z][a-z-]*)", line)]
    return targets


@pytest.mark.parametrize(("doc", "command"), atomizer_commands(), ids=lambda v: v if " " in v else None)
def test_every_documented_command_parses(doc: str, command: str) -> None:
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `{command}` does not parse (exit {exc.code})")


def test_the_documents_show_commands_at_all() -> None:
    documented = {c.split()[1] for _, c in atomizer_commands() if not c.split()[1].startswith("-")}
    assert {"check-config", "install-systemd"} <= documented, documented


@pytest.mark.parametrize(("doc", "target"), make_targets())
def test_every_documented_make_target_exists(doc: str, target: str) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{doc}: make {target} is not a target"


def test_the_scripts_the_docs_name_exist() -> None:
    for doc in DOCS:
        for script in re.findall(r"scripts/[\w.-]+", doc.read_text(encoding="utf-8")):
            assert (ROOT / script).is_file(), f"{doc.name} names {script}, which does not exist"


def test_check_config_as_documented_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    for name in ("DISCORD_TOKEN", "ATOMIZER_GUILD_ID", "ATOMIZER_HOOKS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["check-config"]) == 0
    assert main(["check-config", "--for", "run"]) == 2  # as the README says: it lists what is missing
    assert "DISCORD_TOKEN: not set" in capsys.readouterr().err


def _synopsis() -> dict[str, str]:
    """The README's command-line synopsis: each command's lines (continuations included), by command name."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Command line", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        if line.startswith("atomizer-hq "):
            current = ""
            entries[current] = line
        elif line.startswith("  ") and not line.startswith("   "):
            current = line.split()[0]
            entries[current] = entries.get(current, "") + " " + line
        elif line.strip():
            entries[current] = entries.get(current, "") + " " + line
    return entries


def _long_options(parser: argparse.ArgumentParser, *, nested: bool = True) -> set[str]:
    """A parser's long options, and (nested) its sub-commands' (task add…); not --help, not the program's --version."""
    options: set[str] = set()
    for action in parser._actions:
        if nested and isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _long_options(sub)
        if not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            options |= {o for o in action.option_strings if o.startswith("--")}
    return options


def test_the_readme_synopsis_shows_every_command_and_every_option() -> None:
    """`atomizer-hq X --help` and the README say the same: no flag a reader cannot find, none that is gone."""
    synopsis = _synopsis()
    parser = build_parser()
    assert _long_options(parser, nested=False) <= set(re.findall(r"--[a-z][a-z-]*", synopsis[""]))
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        assert name in synopsis, f"the README synopsis has no line for `{name}`"
        shown, real = set(re.findall(r"--[a-z][a-z-]*", synopsis[name])), _long_options(sub)
        assert real == shown, f"{name}: missing {sorted(real - shown)}, stale {sorted(shown - real)}"
