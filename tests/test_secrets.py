"""Secrets never reach a log line, a repr or an error text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bot.logsetup import REDACTED, Redactor, configure_logging
from bot.settings import Settings
from tests.conftest import API_TOKENS, HOOKS_TOKEN


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_settings_never_show_their_tokens(settings: Settings) -> None:
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert HOOKS_TOKEN not in shown
    for token in API_TOKENS.values():
        assert token not in shown
    assert set(settings.secret_values()) >= {HOOKS_TOKEN, *API_TOKENS.values()}


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_output_is_redacted_wherever_the_token_hides(
    settings: Settings, capsys: pytest.CaptureFixture[str], restore_logging: None, log_format: str
) -> None:
    configure_logging("DEBUG", log_format, settings.secret_values())  # type: ignore[arg-type]
    log = logging.getLogger("atomizer-test")
    log.info("token in the message %s", HOOKS_TOKEN)
    log.warning(f"token in an f-string {API_TOKENS['manager']}")
    log.debug("a header: Authorization: Bearer some-unknown-credential")
    log.info("a url: http://127.0.0.1:18800/hooks/agent?token=abcdef")
    try:
        raise RuntimeError(f"failed with {API_TOKENS['operator']}")
    except RuntimeError:
        log.exception("an exception")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len([line for line in lines if REDACTED in line]) >= 5
    for secret in (HOOKS_TOKEN, *API_TOKENS.values(), "some-unknown-credential", "abcdef"):
        assert secret not in err
    if log_format == "json":
        entries = [json.loads(line) for line in lines]
        assert entries[0]["message"] == f"token in the message {REDACTED}"
        assert entries[-1]["level"] == "error" and "RuntimeError" in entries[-1]["exception"]


def test_the_redactor_replaces_the_longest_secret_first() -> None:
    redact = Redactor(["abcd", "abcdefgh"])
    assert redact("x abcdefgh y abcd") == f"x {REDACTED} y {REDACTED}"
    assert Redactor([""])("nothing to hide") == "nothing to hide"
