"""Logging for every front end: text or JSON lines, with secrets redacted from everything written.

Redaction happens in the formatter, after the message, its arguments and any traceback have been
rendered, so a token cannot slip through an f-string, an exception's text or a repr.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

REDACTED = "***"
# The levels an operator may choose (--log-level, ATOMIZER_LOG_LEVEL), in any case.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_HOOK_QUERY = re.compile(r"(?i)([?&](?:token|hook_token|access_token)=)[^&\s\"']+")


class _VoiceNoise(logging.Filter):
    """discord.py warns at every start that voice needs PyNaCl and davey; this bot never speaks, so it is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in str(record.msg)


# At import, before any discord.Client exists: the warnings are logged from the client's constructor.
for _name in ("discord.client", "discord.voice_state"):
    logging.getLogger(_name).addFilter(_VoiceNoise())

# APScheduler logs two INFO lines per job run: with the 1-second workflow tick that is 170,000 lines a day in the
# journal, and a failing test's log is nothing else. Its warnings (a missed run, a job that raised) stay.
_PER_RUN_LOGGERS = ("apscheduler.executors.default",)


class Redactor:
    """Replaces known secret values, and anything that looks like a bearer credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _BEARER.sub(rf"\1{REDACTED}", text)
        return _HOOK_QUERY.sub(rf"\1{REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor, fmt: str | None = None) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


class JsonFormatter(RedactingFormatter):
    """One JSON object per line, for journald or a log shipper."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redactor(json.dumps(entry, ensure_ascii=False))


def configure_logging(
    level: str = "INFO", log_format: Literal["text", "json"] = "text", secrets: Iterable[str] = ()
) -> Redactor:
    """Send logs to stderr (stdout is for command output) through a redacting formatter."""
    redactor = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if log_format == "json" else RedactingFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING  # --log-level DEBUG shows every run
    for name in _PER_RUN_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    return redactor
