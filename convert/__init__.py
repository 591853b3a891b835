"""convert stage (see the issues)."""
