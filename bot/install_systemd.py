"""`atomizer-hq install-systemd`: the bot's unit and the agents' unit template, written with this machine's paths.

The templates live in `systemd/` at the top of the checkout. Rendering fills their `@NAME@` placeholders; a
user unit (`--user`) leaves out the lines that only a system service needs (`User=`, `XDG_RUNTIME_DIR`).
Before the agents' template replaces an older one, any secret written inline in the old unit moves into each
agent's `gateway.env` (chmod 600), so replacing the unit never leaves a gateway without its token.

This module also reads unit files and environment files for `atomizer-hq doctor`.
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from bot.config import ClusterConfig
from bot.errors import InvalidInput
from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "systemd"
BOT_UNIT = "atomizer-hq.service"
AGENT_UNIT = "openclaw-atomizer@.service"
SYSTEM_UNITS_DIR = Path("/etc/systemd/system")
GATEWAY_ENV = "gateway.env"
NODE_MINIMUM = (22, 12)  # OpenClaw 2026.2.x; 2026.9.x wants 24.16 (openclaw-hooks.md)

_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
_SYSTEM_ONLY = ("@USER@", "@UID@")  # lines naming these exist only in a system service
# Characters a path may hold in a unit: anything else (whitespace, quotes, '\', '$', ';') needs quoting rules
# that differ between directives, so such a path is refused rather than half-escaped.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+=:@,~%-]*$")

# --- reading units and environment files (shared with `atomizer-hq doctor`) ----------------------------------

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW(OR)?D|PASSPHRASE|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
# Command-line options that carry a secret, and the variable OpenClaw reads the same secret from.
SECRET_OPTIONS = {
    "--token": "OPENCLAW_GATEWAY_TOKEN",
    "--password": "OPENCLAW_GATEWAY_PASSWORD",
    "--hook-token": None,
    "--hooks-token": None,
    "--gateway-token": "OPENCLAW_GATEWAY_TOKEN",
    "--api-key": None,
    "--secret": None,
}
_REFERENCE = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class UnitSetting:
    """One `Key=value` of a unit file, with where it was written (continuation lines joined)."""

    path: Path
    line: int
    section: str
    key: str
    value: str


@dataclass(frozen=True)
class InlineSecret:
    """A secret written in a unit file. `value` is kept out of every repr; print `name` and `where` only."""

    path: Path
    line: int
    name: str  # the variable (Environment=) or the option (--token)
    directive: str  # Environment or ExecStart
    value: str = field(repr=False)
    env_name: str | None = None  # the variable the secret can move to, when known

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def describe(self) -> str:
        if self.directive == "Environment":
            return f"{self.where}: Environment= sets {self.name} inline"
        return f"{self.where}: {self.directive}= passes {self.name} on the command line"


def read_unit(path: Path) -> list[UnitSetting]:
    """The settings of one unit file or drop-in, in order; comments and blank lines skipped."""
    settings: list[UnitSetting] = []
    section = ""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = raw.strip()
        if pending:
            if line.startswith(("#", ";")):
                continue  # comments inside a continuation are skipped, as systemd does
            pending.append(line)
        else:
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            pending, start = [line], number
        if pending[-1].endswith("\\"):
            pending[-1] = pending[-1][:-1]
            continue
        text = " ".join(part.strip() for part in pending)
        pending = []
        key, sep, value = text.partition("=")
        if sep:
            settings.append(UnitSetting(path, start, section, key.strip(), value.strip()))
    return settings


def environment_assignments(value: str) -> list[tuple[str, str]]:
    """`Environment=A=1 "B=two words"` as [(A, 1), (B, two words)]."""
    try:
        words = shlex.split(value, posix=True)
    except ValueError:
        words = value.split()
    pairs = []
    for word in words:
        name, sep, assigned = word.partition("=")
        if sep and _ENV_NAME.match(name):
            pairs.append((name, assigned))
    return pairs


def exec_words(value: str) -> list[str]:
    """The command of an Exec*= line, without systemd's prefixes (`-`, `@`, `+`, `!`, `:`)."""
    try:
        words = shlex.split(value, posix=True)
    except ValueError:
        words = value.split()
    if words:
        words[0] = words[0].lstrip("-@+!:")
    return words


def is_secret_value(value: str) -> bool:
    """Whether a value under a secret-sounding name is the secret itself, not a reference or a path to it."""
    value = value.strip()
    if not value or _REFERENCE.match(value):
        return False
    return not value.startswith(("/", "%h/", "~/", "%d/", "%E/", "%S/"))


def inline_secrets(settings: Iterable[UnitSetting]) -> list[InlineSecret]:
    """Secrets written into unit settings: `Environment=...TOKEN=...` and `--token <value>` on Exec lines."""
    found: list[InlineSecret] = []
    for setting in settings:
        if setting.key == "Environment":
            for name, value in environment_assignments(setting.value):
                if SECRET_NAME.search(name) and is_secret_value(value):
                    found.append(InlineSecret(setting.path, setting.line, name, "Environment", value, name))
        elif setting.key.startswith("Exec"):
            words = exec_words(setting.value)
            for index, word in enumerate(words):
                option, sep, attached = word.partition("=")
                if option not in SECRET_OPTIONS:
                    continue
                value = attached if sep else (words[index + 1] if index + 1 < len(words) else "")
                if is_secret_value(value):
                    found.append(
                        InlineSecret(setting.path, setting.line, option, setting.key, value, SECRET_OPTIONS[option])
                    )
    return found


def read_env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile as systemd reads it: `KEY=value` lines, `#`/`;` comments, optional quotes."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _ENV_NAME.match(name):
            continue
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[name] = value
    return values


def expand_specifiers(text: str, *, instance: str, home: Path, user: str) -> str | None:
    """%i, %I, %h, %u and %% as systemd expands them; None when another specifier makes the value unknowable."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "%":
            out.append(char)
            index += 1
            continue
        spec = text[index + 1 : index + 2]
        replacement = {"i": instance, "I": instance, "h": str(home), "u": user, "%": "%"}.get(spec)
        if replacement is None:
            return None
        out.append(replacement)
        index += 2
    return "".join(out)


def env_line(name: str, value: str) -> str:
    """One line of an EnvironmentFile that systemd reads back as exactly `value`."""
    if re.fullmatch(r"[A-Za-z0-9._~+/=:@,-]*", value):
        return f"{name}={value}"
    if "'" not in value and "\n" not in value:
        return f"{name}='{value}'"
    raise InvalidInput(f"{name}: its value holds quotes or line breaks; move it into the EnvironmentFile by hand")


# --- this machine's paths --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitPaths:
    """Everything the two templates name on this machine."""

    root: Path  # the checkout (WorkingDirectory of the bot)
    python: Path  # the virtualenv's python
    env_file: Path  # the bot's .env
    data_dir: Path  # the SQLite database's directory: the one place the bot writes
    node: Path
    openclaw: Path  # the `openclaw` package's openclaw.mjs
    user: str | None = None  # None: a user unit (--user); else the system service's User=
    uid: int | None = None
    writable: tuple[Path, ...] = ()  # more directories the bot writes (the shared project_log.md)

    @classmethod
    def for_this_machine(
        cls,
        settings: Settings,
        config: ClusterConfig,
        *,
        user_mode: bool,
        env_file: Path | None = None,
        run_as: str | None = None,
        node: Path | None = None,
        openclaw: Path | None = None,
    ) -> UnitPaths:
        """The checkout this code runs from, its virtualenv, the settings' database and the config's project log."""
        root = ROOT
        python = Path(sys.prefix) / "bin" / "python" if sys.prefix != sys.base_prefix else root / ".venv/bin/python"
        db = settings.db_path if settings.db_path.is_absolute() else root / settings.db_path
        writable: list[Path] = []
        if config.taskboard.project_log:
            log = Path(config.taskboard.project_log).expanduser()
            writable.append((log if log.is_absolute() else root / log).parent)
        user, uid = None, None
        if not user_mode:
            user = run_as or os.environ.get("SUDO_USER") or getpass.getuser()
            if user == "root":
                raise InvalidInput(
                    "the bot runs as a normal user, not root: pass --run-as NAME (the user who owns the agents), "
                    "or use --user to install it as that user's own unit"
                )
            try:
                uid = pwd.getpwnam(user).pw_uid
            except KeyError:
                raise InvalidInput(f"--run-as {user}: no such user on this machine") from None
        return cls(
            root=root,
            python=python,
            env_file=_absolute(env_file or root / ".env"),
            data_dir=db.parent,
            node=node or _which("node", Path("/usr/bin/node")),
            openclaw=openclaw or _find_openclaw(),
            user=user,
            uid=uid,
            writable=tuple(writable),
        )

    def named(self) -> list[tuple[str, Path]]:
        """Each path the rendered units name, with what it is for."""
        paths = [
            ("checkout (WorkingDirectory)", self.root),
            ("python (ExecStart)", self.python),
            (".env (EnvironmentFile)", self.env_file),
            ("data directory (ReadWritePaths)", self.data_dir),
            *(("project log directory (ReadWritePaths)", path) for path in self.writable),
            ("node (agents' ExecStart)", self.node),
            ("openclaw.mjs (agents' ExecStart)", self.openclaw),
        ]
        return paths


def _absolute(path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def _which(program: str, fallback: Path) -> Path:
    found = shutil.which(program)
    return Path(found) if found else fallback


def _find_openclaw() -> Path:
    """The openclaw.mjs behind `openclaw` on PATH (npm links the command to it); npm's global place otherwise."""
    found = shutil.which("openclaw")
    if found:
        return Path(found).resolve()
    return Path("/usr/lib/node_modules/openclaw/openclaw.mjs")


# --- rendering -------------------------------------------------------------------------------------------


def render_units(paths: UnitPaths, templates_dir: Path = TEMPLATES_DIR) -> dict[str, str]:
    """{unit file name: its text} for both units, with every placeholder filled."""
    for what, path in paths.named():
        if not _SAFE_PATH.match(str(path)):
            raise InvalidInput(
                f"{what}: {str(path)!r} is not a plain absolute path (no spaces, quotes, '$' or '\\'); "
                "systemd would read it otherwise: move it, or link it from a plain path"
            )
    values = {
        "@ROOT@": str(paths.root),
        "@PYTHON@": str(paths.python),
        "@ENV_FILE@": str(paths.env_file),
        "@DATA_DIR@": " ".join(str(p) for p in (paths.data_dir, *paths.writable)),
        "@NODE@": str(paths.node),
        "@OPENCLAW@": str(paths.openclaw),
        "@USER@": paths.user or "",
        "@UID@": "" if paths.uid is None else str(paths.uid),
    }
    return {
        name: _render(templates_dir / name, values, user_unit=paths.user is None) for name in (BOT_UNIT, AGENT_UNIT)
    }


def _render(template: Path, values: dict[str, str], *, user_unit: bool) -> str:
    """The template's first comment paragraph is about the template: the rendered unit says where it came from."""
    source = template.read_text(encoding="utf-8").splitlines()
    body = source[next((i for i, line in enumerate(source) if not line.strip()), len(source)) :]
    lines = [
        f"# Written by `atomizer-hq install-systemd{' --user' if user_unit else ''}` from systemd/{template.name}",
        "# of the atomizer-hq checkout: change that file and run it again rather than editing this one.",
    ]
    for line in body:
        if line.lstrip().startswith(("#", ";")) or "=" not in line:
            lines.append(line)
            continue
        if user_unit and any(marker in line for marker in _SYSTEM_ONLY):
            while lines and lines[-1].lstrip().startswith("#"):
                lines.pop()  # the comment that explains a left-out line goes with it
            continue
        # %-specifiers are systemd's: a literal '%' in a path is written '%%'.
        rendered = _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)).replace("%", "%%"), line)
        if leftover := _PLACEHOLDER.search(rendered):
            raise InvalidInput(f"{template}: unknown placeholder {leftover.group(0)} in {line!r}")
        lines.append(rendered)
    return "\n".join(lines) + "\n"


# --- installing ------------------------------------------------------------------------------------------


@dataclass
class EnvFilePlan:
    """What happens to one agent's gateway.env: created, given the secrets of the old unit, or left alone."""

    agent: str
    path: Path
    exists: bool
    add: dict[str, str] = field(default_factory=dict, repr=False)  # variable -> secret value
    kept: list[str] = field(default_factory=list)  # variables already there with another value: left as they are

    def describe(self) -> str:
        names = ", ".join(self.add) or "nothing yet"
        if not self.exists:
            return f"{self.path}: will be created (mode 600) with {names}"
        if self.add:
            return f"{self.path}: will get {names}"
        return f"{self.path}: present"


@dataclass
class InstallPlan:
    units: dict[Path, str]  # destination -> text
    paths: list[tuple[str, Path, str]]  # (what, path, "ok" | "missing" | "will be created")
    env_files: list[EnvFilePlan]
    moved: list[InlineSecret]  # inline secrets of the old agents' unit, moving into gateway.env
    notes: list[str]
    user_unit: bool
    agents_user: str  # who owns the agents' user units
    agents_home: Path
    create_dirs: list[Path] = field(default_factory=list)  # the data directory, when it is not there yet
    owner: tuple[int, int] | None = None  # chown what we create in the user's home when installing as root

    @property
    def missing(self) -> list[str]:
        return [f"{what}: {path}" for what, path, state in self.paths if state == "missing"]


def plan_install(
    paths: UnitPaths,
    config: ClusterConfig,
    *,
    units_dir: Path | None = None,
    instances_dir: Path | None = None,
    templates_dir: Path = TEMPLATES_DIR,
) -> InstallPlan:
    """Render the units for their destinations, check every path they name, plan the move of inline secrets."""
    user_unit = paths.user is None
    home = Path.home() if user_unit else Path(pwd.getpwnam(paths.user or "").pw_dir)
    # The agents' units are user units of the user who owns them, whichever way the bot runs: their template
    # goes where that user's own units live (a copy in /etc/systemd/user would be shadowed by an old one there).
    agent_dir = units_dir or home / ".config/systemd/user"
    bot_dir = units_dir or (agent_dir if user_unit else SYSTEM_UNITS_DIR)
    rendered = render_units(paths, templates_dir)
    units = {bot_dir / BOT_UNIT: rendered[BOT_UNIT], agent_dir / AGENT_UNIT: rendered[AGENT_UNIT]}

    checked: list[tuple[str, Path, str]] = []
    create_dirs: list[Path] = []
    for what, path in paths.named():
        if path.exists():
            state = "ok"
        elif path == paths.data_dir:
            state = "will be created"
            create_dirs.append(path)
        else:
            state = "missing"
        checked.append((what, path, state))
    notes = _path_notes(paths)

    instances = instances_dir or home / "atomizer/instances"
    old_unit = agent_dir / AGENT_UNIT
    moved = inline_secrets(read_unit(old_unit)) if old_unit.is_file() else []
    movable: dict[str, str] = {}
    for secret in moved:
        try:
            if secret.env_name:
                env_line(secret.env_name, secret.value)  # one systemd reads back as it was
                movable[secret.env_name] = secret.value
                continue
            reason = "no variable is known for it"
        except InvalidInput as exc:
            reason = str(exc)
        notes.append(f"{secret.describe()}: {reason}; move it into {GATEWAY_ENV} by hand")
    if moved:
        notes.append(
            f"the old {old_unit.name} held {len(moved)} secret(s) inline: they move into each agent's {GATEWAY_ENV}; "
            "rotate them afterwards, since the unit file and `systemctl show` exposed them"
        )
    env_files: list[EnvFilePlan] = []
    for agent in config.agent_names:
        instance = instances / agent
        env_path = instance / GATEWAY_ENV
        if not instance.is_dir():
            checked.append((f"instance directory of {agent} (agents' WorkingDirectory)", instance, "missing"))
            continue
        plan = EnvFilePlan(agent, env_path, env_path.is_file())
        present = read_env_file(env_path) if plan.exists else {}
        for name, value in movable.items():
            if name not in present:
                plan.add[name] = value
            elif not hmac.compare_digest(present[name].encode(), value.encode()):
                plan.kept.append(name)
                notes.append(f"{env_path}: already sets {name} to another value than the old unit; kept it")
        env_files.append(plan)
        checked.append(
            (f"{GATEWAY_ENV} of {agent} (EnvironmentFile)", env_path, "ok" if plan.exists else "will be created")
        )
    owner = None
    if not user_unit and os.geteuid() == 0:
        entry = pwd.getpwnam(paths.user or "")
        owner = (entry.pw_uid, entry.pw_gid)
    agents_user = paths.user or getpass.getuser()
    return InstallPlan(units, checked, env_files, moved, notes, user_unit, agents_user, home, create_dirs, owner)


def _path_notes(paths: UnitPaths) -> list[str]:
    notes: list[str] = []
    if paths.env_file.is_file() and paths.env_file.stat().st_mode & 0o077:
        notes.append(f"{paths.env_file} is readable by other users; chmod 600 {paths.env_file}")
    if paths.node.is_file():
        version = _node_version(paths.node)
        if version is not None and version < NODE_MINIMUM:
            shown = ".".join(map(str, version))
            notes.append(
                f"{paths.node} is Node {shown}: OpenClaw 2026.2.x needs >= 22.12 and 2026.9.x >= 24.16; "
                "pass --node with a newer one"
            )
    return notes


def _node_version(node: Path) -> tuple[int, ...] | None:
    try:
        result = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)\.(\d+)", result.stdout.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class InstallResult:
    written: list[Path]
    backups: list[Path]
    env_files: list[Path]
    created: list[Path]


def install(plan: InstallPlan, *, now: datetime | None = None) -> InstallResult:
    """Write the plan: gateway.env files first (so no gateway loses its token), then the units, old ones kept."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    result = InstallResult([], [], [], [])
    for directory in plan.create_dirs:
        _makedirs(directory, plan.owner)
        result.created.append(directory)
    for env in plan.env_files:
        if env.exists and not env.add:
            continue
        _write_env_file(env)
        _chown(env.path, plan.owner)
        result.env_files.append(env.path)
    for destination, text in plan.units.items():
        # What lands in the agents' user's home is theirs (an install with sudo writes their ~/.config too).
        owner = plan.owner if destination.is_relative_to(plan.agents_home) else None
        _makedirs(destination.parent, owner)
        if destination.is_file():
            old = destination.read_text(encoding="utf-8", errors="replace")
            if old == text:
                continue
            backup = free_name(destination.with_name(f"{destination.name}.bak-{stamp}"))
            # The old unit may hold secrets: its copy keeps everything but them, readable by its owner only.
            secrets = [s for s in plan.moved if s.path == destination]
            atomic_write(backup, _without_secrets(old, secrets), 0o600)
            _chown(backup, owner)
            result.backups.append(backup)
        atomic_write(destination, text, 0o644)
        _chown(destination, owner)
        result.written.append(destination)
    return result


def _write_env_file(env: EnvFilePlan) -> None:
    lines = []
    if not env.exists:
        lines += [
            f"# Secrets of the OpenClaw gateway of {env.agent}, read by systemd for openclaw-atomizer@{env.agent}.",
            "# KEY=value lines; keep this file readable by its owner only (chmod 600).",
            "# OPENCLAW_GATEWAY_TOKEN=   gateway.auth.token",
            '# OPENCLAW_HOOKS_TOKEN=     used from openclaw.json as "hooks": {"token": "${OPENCLAW_HOOKS_TOKEN}"}',
        ]
    lines += [env_line(name, value) for name, value in env.add.items()]
    old = env.path.read_text(encoding="utf-8") if env.exists else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write(env.path, old + "\n".join(lines) + "\n", 0o600)


def _without_secrets(text: str, secrets: Sequence[InlineSecret]) -> str:
    for secret in secrets:
        if secret.value:
            text = text.replace(secret.value, f"<moved to {GATEWAY_ENV}>")
    return text


def atomic_write(path: Path, text: str, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def free_name(path: Path) -> Path:
    candidate, counter = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{counter}")
        counter += 1
    return candidate


def _chown(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)


def _makedirs(directory: Path, owner: tuple[int, int] | None) -> None:
    """mkdir -p, each directory it creates given to `owner`."""
    missing = [d for d in [directory, *directory.parents] if not d.exists()]
    for created in reversed(missing):
        created.mkdir()
        _chown(created, owner)


# --- output ----------------------------------------------------------------------------------------------


def print_plan(plan: InstallPlan, out: TextIO) -> None:
    for destination, text in plan.units.items():
        print(f"# ---- {destination}", file=out)
        print(text, file=out)
    print("# ---- paths the units name", file=out)
    width = max(len(what) for what, _, _ in plan.paths)
    for what, path, state in plan.paths:
        print(f"{state.upper() if state == 'missing' else state:<15} {what:<{width}}  {path}", file=out)
    for env in plan.env_files:
        if env.add or not env.exists:
            print(f"gateway.env     {env.describe()}", file=out)
    for note in plan.notes:
        print(f"note: {note}", file=out)


def next_steps(plan: InstallPlan) -> list[str]:
    manager = "systemctl --user" if plan.user_unit else "sudo systemctl"
    # User units (the agents', and the bot's with --user) run without a login session only with lingering on.
    steps = [f"sudo loginctl enable-linger {plan.agents_user}", f"{manager} daemon-reload"]
    if not plan.user_unit:
        steps.append(f"systemctl --user daemon-reload   # as {plan.agents_user}, for {AGENT_UNIT}")
    steps += [
        f"{manager} enable --now {BOT_UNIT}",
        "atomizer-hq cluster restart all   # the agents pick up their new unit and gateway.env",
        "atomizer-hq doctor                # what else would break delivery or monitoring",
    ]
    if plan.moved:
        steps.append("rotate the secrets that were inline in the old unit (new values in each gateway.env)")
    return steps


async def cli_install_systemd(args: argparse.Namespace, settings: Settings, config: ClusterConfig) -> int:
    """`atomizer-hq install-systemd [--user] [--dry-run]`: 0 written (or would be, every path there), 1 not."""
    paths = UnitPaths.for_this_machine(
        settings,
        config,
        user_mode=args.user,
        env_file=args.env_file,
        run_as=args.run_as,
        node=args.node,
        openclaw=args.openclaw,
    )
    plan = plan_install(paths, config, units_dir=args.units_dir, instances_dir=args.instances_dir)
    missing = plan.missing
    if args.dry_run:
        print_plan(plan, sys.stdout)
        for line in missing:
            print(f"atomizer-hq: missing: {line}", file=sys.stderr)
        return 1 if missing else 0
    if missing and not args.force:
        for line in missing:
            print(f"atomizer-hq: missing: {line}", file=sys.stderr)
        print("atomizer-hq: nothing written; fix the paths above (or pass --force)", file=sys.stderr)
        return 1
    try:
        result = install(plan)
    except PermissionError as exc:
        hint = "run it with sudo" if not plan.user_unit else "check the directory's owner"
        print(f"atomizer-hq: cannot write {exc.filename}: permission denied; {hint}, or use --user", file=sys.stderr)
        return 1
    for path in result.created:
        print(f"created {path}")
    for path in result.env_files:
        print(f"wrote {path} (mode 600)")
    for path in result.backups:
        print(f"kept the old unit as {path} (secrets removed)")
    for path in result.written:
        print(f"wrote {path}")
    if not result.written:
        print("units already up to date")
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    print("next:")
    for step in next_steps(plan):
        print(f"  {step}")
    return 0
