"""tokentrail chargeback (being built)."""
