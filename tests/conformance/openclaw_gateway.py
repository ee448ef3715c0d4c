"""Start and stop a real OpenClaw gateway (npm package `openclaw`) on loopback, for the conformance suite.

What is installed where is `scripts/openclaw-install.sh`'s business (run by `make test-openclaw`); this
module only reads that layout. The recipe is the one in openclaw-hooks.md ("Running a real gateway
locally"): a generated JSON config, a state dir and HOME in a temporary directory, Bonjour and
auto-update off, then `node openclaw.mjs gateway run`, stopped with SIGTERM to its process group.

One thing the recipe lacks: a gateway accepts `channel: "discord"` only when its Discord channel plugin
is loaded (otherwise every hook that names it is refused with 400 `channel must be last`). 2026.2.12
bundles the plugin (enabled by `plugins.entries.discord.enabled`); 2026.9.6 installs it from npm
(`openclaw plugins install npm:@openclaw/discord@…`). No Discord bot token is configured: the channel
exists, nothing connects to Discord.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.config import AgentConfig
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY

CACHE_ENV = "ATOMIZER_OPENCLAW_CACHE"
STAMP = ".atomizer-installed"  # written last by scripts/openclaw-install.sh: the version installed there
RELEASES = (RELEASE_CURRENT, RELEASE_LEGACY)
NODE_VERSION = "24.21.0"
DISCORD_PLUGIN = {RELEASE_CURRENT: "npm:@openclaw/discord@2026.9.6"}  # releases that do not bundle it
# Ports a gateway may take above its own: 2026.2.12 opens a relay on +3; 2026.9.6's documentation
# says debugging ports run up to +110. The whole range must be free before a gateway starts.
SIDE_PORT_SPAN = {RELEASE_CURRENT: 110, RELEASE_LEGACY: 3}
START_TIMEOUT_S = 60.0
PLUGIN_INSTALL_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0
MESSAGE_REQUIRED = {"ok": False, "error": "message required"}


class GatewayStartError(RuntimeError):
    """The gateway did not come up; the message ends with the tail of its log."""


@dataclass(frozen=True)
class OpenClawInstall:
    """The cache directory filled by scripts/openclaw-install.sh."""

    cache: Path

    @classmethod
    def from_env(cls) -> OpenClawInstall | None:
        value = os.environ.get(CACHE_ENV, "").strip()
        return cls(Path(value).expanduser()) if value else None

    @property
    def node_bin(self) -> Path:
        return self.cache / "node" / "bin"

    @property
    def npm_cache(self) -> Path:
        return self.cache / "npm-cache"

    def package_dir(self, release: str) -> Path:
        return self.cache / f"openclaw-{release}"

    def entry_point(self, release: str) -> Path:
        return self.package_dir(release) / "node_modules" / "openclaw" / "openclaw.mjs"

    def problems(self) -> list[str]:
        """What is missing for a complete install; empty when everything is there."""
        found: list[str] = []
        if not _stamp_ok(self.cache / "node", f"@{NODE_VERSION}") or not (self.node_bin / "node").is_file():
            found.append(f"Node {NODE_VERSION} ({self.cache / 'node'})")
        for release in RELEASES:
            if (
                not _stamp_ok(self.package_dir(release), f"openclaw@{release}")
                or not self.entry_point(release).is_file()
            ):
                found.append(f"openclaw {release} ({self.package_dir(release)})")
        return found


def _stamp_ok(directory: Path, expected: str) -> bool:
    try:
        return (directory / STAMP).read_text(encoding="utf-8").strip().endswith(expected)
    except OSError:
        return False


@dataclass
class RealGateway:
    """One running gateway process (group) and what is needed to talk to it."""

    release: str
    port: int
    hooks_token: str
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    started_in_s: float = 0.0
    # Distinct (readyz, authenticated hook check) answers seen while waiting, with their time since start.
    startup_observations: list[tuple[float, str]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def agent(self, name: str = "conformance") -> AgentConfig:
        return AgentConfig(name=name, port=self.port)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> float:
        """SIGTERM to the whole process group (2026.2.12 runs a child); SIGKILL what is left after `timeout`."""
        started = time.monotonic()
        pgid = self.process.pid  # started with start_new_session: the group id is the pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = started + timeout
        while time.monotonic() < deadline:
            self.process.poll()
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
            raise GatewayStartError(f"gateway {self.release} ignored SIGTERM for {timeout:g} s; killed it")
        self.process.wait(timeout=10)
        return time.monotonic() - started


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if family == socket.AF_INET6 and exc.errno in (97, 99):  # no IPv6 loopback here: fine
                    continue
                return False
    return True


def free_port_range(span: int) -> int:
    """A base port P with P..P+span free on loopback, below the ephemeral range (clients cannot take it)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32_768
    low, high = 20_000, ephemeral_low - span - 1
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(low, high)
        if all(_port_free(port) for port in range(base, base + span + 1)):
            return base
    raise GatewayStartError(f"no free range of {span + 1} loopback ports found")


def gateway_config(release: str, port: int, gateway_token: str, hooks_token: str, log_file: Path) -> dict[str, Any]:
    """The config file of openclaw-hooks.md; `telemetry` and `models` only where the schema knows them."""
    config: dict[str, Any] = {
        "gateway": {
            "mode": "local",
            "port": port,
            "bind": "loopback",
            "auth": {"mode": "token", "token": gateway_token},
        },
        "hooks": {"enabled": True, "token": hooks_token, "path": "/hooks"},
        "update": {"checkOnStart": False},
        # Both releases log to /tmp/openclaw/openclaw-<date>.log whatever TMPDIR says, unless told otherwise.
        "logging": {"file": str(log_file)},
    }
    if release == RELEASE_CURRENT:
        config["telemetry"] = {"enabled": False}
        config["models"] = {"catalogRefresh": {"enabled": False}}
    else:
        # 2026.2.12 rejects unknown keys; its Discord plugin is bundled but disabled by default.
        config["plugins"] = {"entries": {"discord": {"enabled": True}}}
    return config


def _environment(install: OpenClawInstall, workdir: Path) -> dict[str, str]:
    """A minimal environment: no credentials of this machine's user reach the gateway (runs fail, as intended)."""
    env = {
        "PATH": f"{install.node_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(workdir / "home"),
        "TMPDIR": str(workdir / "tmp"),  # the gateway logs to $TMPDIR/openclaw/
        "LANG": "C.UTF-8",
        "OPENCLAW_STATE_DIR": str(workdir / "state"),
        "OPENCLAW_CONFIG_PATH": str(workdir / "openclaw.json"),
        "OPENCLAW_DISABLE_BONJOUR": "1",
        "OPENCLAW_NO_AUTO_UPDATE": "1",
        "NO_COLOR": "1",
        "NODE_COMPILE_CACHE": str(install.cache / "node-compile-cache"),  # else every fresh TMPDIR compiles anew
        "npm_config_cache": str(install.npm_cache),  # shared across runs: plugin installs mostly hit the cache
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    # How this machine reaches the npm registry (a proxy, its CA bundle): the 2026.9.6 plugin install needs it.
    for name in _PASS_THROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


_PASS_THROUGH = (
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "npm_config_cafile", "npm_config_registry",
)  # fmt: skip


def _install_discord_plugin(install: OpenClawInstall, release: str, workdir: Path, env: dict[str, str]) -> None:
    spec = DISCORD_PLUGIN[release]
    command = [str(install.node_bin / "node"), str(install.entry_point(release)), "plugins", "install", spec, "--force"]
    log_path = workdir / "plugin-install.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # it runs npm: on a timeout the whole group goes
        )  # fmt: skip
    try:
        returncode = process.wait(timeout=PLUGIN_INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise GatewayStartError(
            f"`openclaw plugins install {spec}` took over {PLUGIN_INSTALL_TIMEOUT_S:g} s:\n{_tail(log_path)}"
        ) from None
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if returncode != 0 or "Installed plugin: discord" not in output:
        raise GatewayStartError(f"`openclaw plugins install {spec}` failed (exit {returncode}):\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start_gateway(
    install: OpenClawInstall,
    release: str,
    workdir: Path,
    hooks_token: str,
    *,
    start_timeout: float = START_TIMEOUT_S,
) -> RealGateway:
    """Start a gateway of `release` on a free loopback port and wait until it takes hooks."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; known: {', '.join(RELEASES)}")
    for sub in ("home", "tmp", "state"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    # 2026.2.12 transpiles its TypeScript plugins with jiti into $TMPDIR/jiti: a cold cache makes a start take
    # about 15 s instead of 2 s. Keep that cache (only that) with the install.
    jiti_cache = install.cache / "jiti-cache" / release
    jiti_cache.mkdir(parents=True, exist_ok=True)
    if not (workdir / "tmp" / "jiti").exists():
        (workdir / "tmp" / "jiti").symlink_to(jiti_cache, target_is_directory=True)
    env = _environment(install, workdir)
    port = free_port_range(SIDE_PORT_SPAN[release])
    config = gateway_config(release, port, secrets.token_hex(24), hooks_token, workdir / "openclaw-file.log")
    (workdir / "openclaw.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if release in DISCORD_PLUGIN:
        _install_discord_plugin(install, release, workdir, env)  # also enables it in openclaw.json
    log_path = workdir / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(install.node_bin / "node"), str(install.entry_point(release)), "gateway", "run"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so SIGTERM reaches every process it spawns
        )  # fmt: skip
    gateway = RealGateway(release, port, hooks_token, workdir, process, log_path)
    try:
        _wait_ready(gateway, start_timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            gateway.stop(timeout=10)
        raise
    return gateway


def _observe(http: httpx.Client, gateway: RealGateway) -> tuple[str, bool]:
    """One look at a starting gateway: (what it answered, whether it takes hooks now)."""
    try:
        readyz = http.get(f"{gateway.base_url}/readyz")
    except httpx.HTTPError as exc:
        return f"readyz: {type(exc).__name__}", False
    ready_text = f"readyz {readyz.status_code} {'JSON' if _json(readyz) is not None else 'not JSON'}"
    # Authenticated, so these probes never count toward the bad-token limit; `{}` starts nothing.
    try:
        hook = http.post(
            f"{gateway.base_url}/hooks/agent",
            content=b"{}",
            headers={"Authorization": f"Bearer {gateway.hooks_token}", "Content-Type": "application/json"},
        )
    except httpx.HTTPError as exc:
        return f"{ready_text}; hook check: {type(exc).__name__}", False
    hook_text = f"hook check {hook.status_code} {' '.join(hook.text.split())[:60]}"
    hooks_work = hook.status_code == 400 and _json(hook) == MESSAGE_REQUIRED
    if gateway.release == RELEASE_CURRENT:
        body = _json(readyz)
        return f"{ready_text}; {hook_text}", readyz.status_code == 200 and body is not None and body.get(
            "ready"
        ) is True
    return f"{ready_text}; {hook_text}", hooks_work


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _wait_ready(gateway: RealGateway, timeout: float) -> None:
    started = time.monotonic()
    last = ""
    with httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, connect=1.0)) as http:
        while True:
            elapsed = time.monotonic() - started
            if not gateway.alive():
                raise GatewayStartError(
                    f"gateway {gateway.release} exited with {gateway.process.returncode} while starting:\n"
                    f"{gateway.log_tail()}"
                )
            seen, ready = _observe(http, gateway)
            if seen != last:
                gateway.startup_observations.append((round(elapsed, 2), seen))
                last = seen
            if ready:
                gateway.started_in_s = elapsed
                return
            if elapsed > timeout:
                raise GatewayStartError(
                    f"gateway {gateway.release} not ready after {timeout:g} s (last: {seen}):\n{gateway.log_tail()}"
                )
            time.sleep(0.25)
