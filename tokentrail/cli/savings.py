"""tokentrail savings (being built)."""
