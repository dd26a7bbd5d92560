"""tokentrail margin (being built)."""
