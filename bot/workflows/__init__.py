"""Workflows: DAGs of delegations and approval gates, run durably on SQLite (docs/workflows-design.md)."""
