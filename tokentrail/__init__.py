"""tokentrail: who spent the LLM money, down to the single request."""
