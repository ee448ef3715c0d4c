"""Small shared pieces for the cogs: each module has one job (RoboDanny's cogs/utils)."""
