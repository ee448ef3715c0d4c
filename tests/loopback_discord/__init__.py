"""A Discord-compatible server on loopback, to run the real `atomizer-hq run` against over the wire."""

from tests.loopback_discord.server import LoopbackDiscord, RateLimitRule, RequestRecord, Violation
from tests.loopback_discord.state import GuildState, Interaction, Response, StoredMessage, User

__all__ = [
    "GuildState", "Interaction", "LoopbackDiscord", "RateLimitRule", "RequestRecord", "Response", "StoredMessage",
    "User", "Violation",
]  # fmt: skip
