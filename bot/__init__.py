"""atomizer-hq core: everything but Discord (bot.discord_bot is the one module that imports discord)."""

__version__ = "0.1.0"
