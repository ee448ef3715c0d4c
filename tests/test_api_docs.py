"""docs/api.md is the API's own route table: regenerate it with `python -m bot.api_docs > docs/api.md`."""

from __future__ import annotations

from pathlib import Path

from bot.api_docs import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_docs_api_md_lists_every_route_as_the_api_serves_it() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), "run: python -m bot.api_docs > docs/api.md"
