"""tokentrail whatif (being built)."""
