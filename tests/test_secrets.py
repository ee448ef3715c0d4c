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


@pytest.mark.parametrize(("level", "per_run_shown"), [("INFO", False), ("DEBUG", True)])
def test_the_schedulers_two_lines_per_job_run_are_shown_only_at_debug(
    capsys: pytest.CaptureFixture[str], restore_logging: None, level: str, per_run_shown: bool
) -> None:
    """The workflow tick runs every second: at INFO its "Running job"/"executed successfully" pair buried every
    other line of the journal (and of a failed test's log). A job that fails is still shown."""
    executors = logging.getLogger("apscheduler.executors.default")
    before = executors.level
    try:
        configure_logging(level)
        executors.info('Running job "workflow tick" (scheduled at …)')
        executors.error('Job "workflow tick" raised an exception')
        logging.getLogger("bot.workflows.engine").info("workflow run W-1 succeeded")
    finally:
        executors.setLevel(before)
    err = capsys.readouterr().err
    assert ("Running job" in err) is per_run_shown
    assert 'Job "workflow tick" raised an exception' in err and "workflow run W-1 succeeded" in err
