"""Reconciliation with the provider's bill: how much of it the ledger explains, and what the rest is.

``sources`` reads the provider's usage and cost (OpenAI and Anthropic admin APIs), ``engine``
compares them with the ledger per day x model and explains the residual, ``store`` keeps each
run in the ledger for ``tokentrail report``, ``runner`` does all three. ``keys`` stamps the join
keys on each call (light: instrumentation imports it, so this package's ``__init__`` imports nothing).
"""
