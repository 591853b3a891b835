"""quantize stage (see the issues)."""
