"""One exception hierarchy for the whole core.

Every error carries a message a person can act on. Front ends map these types to an ephemeral
Discord reply, a CLI exit code or an HTTP status, each in one place, through the attributes below.
"""

from __future__ import annotations


class AtomizerError(Exception):
    """Base of every error the core raises on purpose."""

    code = "error"
    exit_code = 1  # CLI: 1 = the operation failed
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- bad input (exit 2, HTTP 4xx) -------------------------------------------------------------


class InvalidInput(AtomizerError):
    """The request itself is wrong: fixing the input fixes it."""

    code = "invalid_input"
    exit_code = 2
    http_status = 400


class ConfigError(InvalidInput):
    """The configuration is invalid; `problems` holds one line per problem."""

    code = "invalid_config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid configuration")


class InvalidWorkflow(ConfigError):
    """A workflow definition is invalid; `problems` holds one `file:line: key: what; fix` line each."""

    code = "invalid_workflow"


class MissingSecret(InvalidInput):
    """A command needs a token that is not set."""

    code = "missing_secret"


class UnknownAgent(InvalidInput):
    code = "unknown_agent"
    http_status = 404


class InvalidTarget(InvalidInput):
    code = "invalid_target"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    http_status = 413


# --- authority --------------------------------------------------------------------------------


class NotAuthenticated(AtomizerError):
    code = "unauthorized"
    http_status = 401


class NotAllowed(AtomizerError):
    """Authenticated, but this caller may not do this; the message says who could."""

    code = "forbidden"
    http_status = 403


# --- storage ----------------------------------------------------------------------------------


class StoreError(AtomizerError):
    code = "store_error"
    http_status = 503


class DatabaseRefused(StoreError):
    """The database file is not one we may open (foreign, corrupt, too new); it was left untouched."""

    code = "database_refused"
    exit_code = 2


# --- gateways ---------------------------------------------------------------------------------


class GatewayError(AtomizerError):
    """Something went wrong talking to an agent's OpenClaw gateway."""

    code = "gateway_error"
    http_status = 502

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(f"{agent}: {message}")
        self.agent = agent
        self.reason = message


class AgentUnavailable(GatewayError):
    """The agent could not take the request now; retrying later may work.

    `sent` says whether the request may have reached the gateway: False only when it surely did
    not (connection refused, connect timeout, 503 starting), which is what makes a blind retry safe
    against a gateway that ignores idempotency keys.
    """

    code = "agent_unavailable"
    http_status = 503

    def __init__(self, agent: str, message: str, *, sent: bool) -> None:
        super().__init__(agent, message)
        self.sent = sent


class HookRejected(GatewayError):
    """The gateway refused the request itself (400, 404, 405, 413): retrying will not help."""

    code = "hook_rejected"

    def __init__(self, agent: str, status: int, gateway_error: str) -> None:
        super().__init__(agent, f"rejected by the gateway (HTTP {status}): {gateway_error}")
        self.status = status
        self.gateway_error = gateway_error


class HookUnauthorized(GatewayError):
    code = "hook_unauthorized"

    def __init__(self, agent: str) -> None:
        super().__init__(
            agent,
            "the gateway refused our hooks token (HTTP 401); check ATOMIZER_HOOKS_TOKEN "
            f"or ATOMIZER_HOOKS_TOKEN_{env_suffix(agent)} against the agent's hooks.token",
        )


class HookRateLimited(GatewayError):
    code = "hook_rate_limited"
    http_status = 503

    def __init__(self, agent: str, retry_after: float) -> None:
        super().__init__(agent, f"the gateway is rate limiting bad tokens (HTTP 429); retry after {retry_after:g} s")
        self.retry_after = retry_after


class GatewayProtocolError(GatewayError):
    """The port answered, but not as an OpenClaw gateway would (HTML, garbage, truncated JSON)."""

    code = "gateway_protocol_error"


def env_suffix(agent: str) -> str:
    """The suffix an agent's name takes in an environment variable name (tech-lead -> TECH_LEAD)."""
    return "".join(ch if ch.isalnum() else "_" for ch in agent).upper()


# --- systemd units (atomizer-hq cluster, /cluster) --------------------------------------------


class SystemdUnavailable(AtomizerError):
    """No systemd user manager to talk to (binary missing, no user bus, not booted with systemd)."""

    code = "systemd_unavailable"
    http_status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"systemd is not running for this user ({reason}); on this host start agents by hand "
            "or enable lingering: loginctl enable-linger $USER"
        )
        self.reason = reason


class UnitCommandFailed(AtomizerError):
    """systemctl or journalctl ran but did not do what was asked; `detail` is its own message."""

    code = "unit_command_failed"
    http_status = 502

    def __init__(self, agent: str, action: str, detail: str) -> None:
        super().__init__(f"{agent}: {action} failed: {detail}")
        self.agent = agent
        self.action = action
        self.detail = detail
