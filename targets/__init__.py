"""targets stage (see the issues)."""
