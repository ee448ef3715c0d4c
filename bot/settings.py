"""Secrets and per-site values, from the environment (with `.env` loaded by python-dotenv).

Tokens are kept as `SecretStr`, so they never show in a repr, a log line or an error message; the
only way to read one is `.get_secret_value()`, at the point where it goes into a request header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import load_dotenv
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError, env_suffix

HOOKS_TOKEN_PREFIX = "ATOMIZER_HOOKS_TOKEN_"
API_TOKEN_PREFIX = "ATOMIZER_API_TOKEN_"
MIN_API_TOKEN_LENGTH = 16
# Identities of the loopback API that are people on the host, not agents.
HUMAN_IDENTITIES = ("operator", "admin")


class Settings(BaseSettings):
    """Values from the environment. Per-agent tokens are collected from their prefixed variables."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    guild_id: str | None = Field(default=None, alias="ATOMIZER_GUILD_ID")
    hooks_token: SecretStr | None = Field(default=None, alias="ATOMIZER_HOOKS_TOKEN")
    api_tokens_spec: SecretStr | None = Field(default=None, alias="ATOMIZER_API_TOKENS")
    config_path: Path = Field(default=Path("config/cluster.toml"), alias="ATOMIZER_CONFIG")
    db_path: Path = Field(default=Path("data/atomizer.db"), alias="ATOMIZER_DB")
    log_level: str = Field(default="INFO", alias="ATOMIZER_LOG_LEVEL")
    # Unset: Discord itself. Set only for a test server or a self-hosted proxy speaking Discord's API.
    discord_api_base: str | None = Field(default=None, alias="ATOMIZER_DISCORD_API_BASE")
    # Filled from ATOMIZER_HOOKS_TOKEN_<AGENT> / ATOMIZER_API_TOKEN_<NAME> (suffix as in the variable).
    hooks_token_overrides: dict[str, SecretStr] = Field(default_factory=dict)
    api_token_vars: dict[str, SecretStr] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_prefixed(cls, data: Any) -> Any:
        # `DISCORD_TOKEN=` as the example file ships it is unset, not a token of no characters: every check
        # downstream asks "is it None?", so a blank value must never get that far.
        data = {k: v for k, v in data.items() if not _blank(v)} if isinstance(data, Mapping) else {}
        environ = os.environ
        data.setdefault(
            "hooks_token_overrides",
            {k[len(HOOKS_TOKEN_PREFIX) :]: v for k, v in environ.items() if k.startswith(HOOKS_TOKEN_PREFIX)},
        )
        data.setdefault(
            "api_token_vars",
            {k[len(API_TOKEN_PREFIX) :]: v for k, v in environ.items() if k.startswith(API_TOKEN_PREFIX)},
        )
        for key in ("hooks_token_overrides", "api_token_vars"):
            if isinstance(data[key], Mapping):
                data[key] = {k: v for k, v in data[key].items() if not _blank(v)}
        return data

    @field_validator("discord_api_base")
    @classmethod
    def _http_base(cls, value: str | None) -> str | None:
        """Only an http(s) URL: anything else would send the bot token somewhere unexpected, or nowhere."""
        if value is None or not value.strip():
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"ATOMIZER_DISCORD_API_BASE must be an http:// or https:// URL such as "
                f"https://discord.com/api/v10, not {value!r}; unset it to talk to Discord itself"
            )
        return value.strip().rstrip("/")

    def secret_values(self) -> list[str]:
        """Every secret this process knows, for the log redactor."""
        values = [self.discord_token, self.hooks_token, self.api_tokens_spec]
        values += [*self.hooks_token_overrides.values(), *self.api_token_vars.values()]
        secrets = [v.get_secret_value() for v in values if v is not None]
        if self.api_tokens_spec is not None:
            for item in self.api_tokens_spec.get_secret_value().split(","):
                secrets.append(item.partition(":")[2].strip())
        return [s for s in secrets if s]

    def hooks_token_for(self, agent: str) -> SecretStr | None:
        """The token for one agent's gateway: its own override, else the shared one."""
        return self.hooks_token_overrides.get(env_suffix(agent)) or self.hooks_token

    def api_identities(self, names: list[str]) -> dict[str, SecretStr]:
        """Loopback API callers: identity -> token, from ATOMIZER_API_TOKENS and ATOMIZER_API_TOKEN_<NAME>.

        `names` are the valid identities (agent names and the human ones); raises ConfigError for a
        malformed list, an unknown identity, a short token or a token shared by two identities.
        """
        problems: list[str] = []
        found: dict[str, SecretStr] = {}
        by_suffix = {env_suffix(name): name for name in names}
        if self.api_tokens_spec is not None:
            for index, item in enumerate(self.api_tokens_spec.get_secret_value().split(",")):
                item = item.strip()
                if not item:
                    continue
                identity, sep, token = item.partition(":")
                identity, token = identity.strip(), token.strip()
                if not sep or not identity or not token:
                    problems.append(
                        f"environment: ATOMIZER_API_TOKENS: entry {index + 1} is not 'identity:token'; "
                        "write e.g. 'manager:<token>,operator:<token>'"
                    )
                    continue
                found[identity] = SecretStr(token)
        for suffix, token in self.api_token_vars.items():
            identity = by_suffix.get(suffix)
            if identity is None:
                problems.append(
                    f"environment: {API_TOKEN_PREFIX}{suffix}: no agent or identity called that; "
                    f"valid suffixes: {', '.join(sorted(by_suffix))}"
                )
                continue
            found[identity] = token
        for identity in found:
            if identity not in names:
                problems.append(
                    f"environment: ATOMIZER_API_TOKENS: unknown identity {identity!r}; valid: {', '.join(names)}"
                )
        seen: dict[str, str] = {}
        for identity, token in found.items():
            value = token.get_secret_value()
            if len(value) < MIN_API_TOKEN_LENGTH:
                problems.append(
                    f"environment: API token of {identity!r}: too short ({len(value)} characters); use at least "
                    f"{MIN_API_TOKEN_LENGTH}, e.g. from `python3 -c 'import secrets; print(secrets.token_hex(24))'`"
                )
            if value in seen:
                problems.append(
                    f"environment: API token of {identity!r}: the same token as {seen[value]!r}; "
                    "each caller needs its own token, since the token is the caller's identity"
                )
            seen.setdefault(value, identity)
        if problems:
            raise ConfigError(problems)
        return found


def _blank(value: Any) -> bool:
    """Empty or whitespace only, as a plain string or a SecretStr."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and not value.strip()


def load_settings(env_file: Path | None = None) -> Settings:
    """Load `.env` (never overriding the real environment), then read the settings."""
    if env_file is not None:
        if not env_file.is_file():
            raise ConfigError([f"{env_file}: (file): not found; pass an existing file to --env-file"])
        load_dotenv(env_file, override=False)
    elif Path(".env").is_file():
        load_dotenv(Path(".env"), override=False)
    try:
        return Settings()
    except ValidationError as exc:
        problems = [f"environment: {error['msg'].removeprefix('Value error, ')}" for error in exc.errors()]
        raise ConfigError(problems) from None
