"""The coordinator: rolling pool upgrades (plan: prechecks, order; steps: idempotent host steps; runner: loop)."""
