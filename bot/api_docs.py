"""docs/api.md, written from the loopback API's own OpenAPI document (so the two cannot drift).

Regenerate with `python -m bot.api_docs > docs/api.md`; a test fails when they differ.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "cluster.toml"
HEADER = """# The loopback API

`atomizer-hq run` serves this API on `127.0.0.1:18790` (`[api]` in `config/cluster.toml`) for the
agents' own scripts. Every route but `/healthz`, `/metrics` and `/openapi.json` needs
`Authorization: Bearer <token>`; the token is the caller's identity (`ATOMIZER_API_TOKENS`:
an agent's name, `operator` or `admin`), never anything in the body. Errors are
`{"error": CODE, "detail": TEXT}` with the matching HTTP status. The full schema of every body and
answer is at `GET /openapi.json`.

```sh
curl -s -H "Authorization: Bearer $ATOMIZER_API_TOKEN" http://127.0.0.1:18790/v1/status
curl -s -H "Authorization: Bearer $ATOMIZER_API_TOKEN" -d '{"to":"nx-expert","message":"Mesh the M2 mirror"}' \\
     http://127.0.0.1:18790/v1/delegations
```

| method | path | auth | what | answers |
|---|---|---|---|---|
"""


def markdown(document: dict[str, Any]) -> str:
    rows = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            auth = "no" if operation.get("security") == [] else "token"
            answers = ", ".join(sorted(operation.get("responses", {})))
            summary = operation.get("summary", "").replace("|", "\\|")
            rows.append(f"| {method.upper()} | `{path}` | {auth} | {summary} | {answers} |")
    return HEADER + "\n".join(rows) + "\n"


async def _document() -> dict[str, Any]:
    from bot.api import LoopbackApi
    from bot.config import load_cluster_config
    from bot.services import open_services
    from bot.settings import Settings

    config = load_cluster_config(SHIPPED_CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db_path=Path(tmp) / "docs.db", hooks_token_overrides={}, api_token_vars={})
        async with open_services(settings, config) as services:
            return LoopbackApi(services, {}).openapi()


def render() -> str:
    return markdown(asyncio.run(_document()))


if __name__ == "__main__":
    sys.stdout.write(render())
