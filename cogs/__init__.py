"""Discord adapters: thin translations between slash commands and the core in bot/."""
