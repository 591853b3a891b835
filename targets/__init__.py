"""Board registry: one TOML per board (boards are data, not code)."""
