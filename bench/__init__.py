"""bench stage (see the issues)."""
