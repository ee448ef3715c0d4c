"""Capability routing (docs/routing.md): filter the fleet, score the survivors, explain the choice."""
