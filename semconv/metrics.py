"""Generated from registry.yaml by ``python -m tokentrail.semconv.generate``: do not edit."""


#: Cost of one LLM call in USD (one point per call, USD-sized buckets).
TOKENTRAIL_COST = 'tokentrail.cost'
#: Tokens by tokentrail.token.type (input means uncached input).
TOKENTRAIL_TOKENS = 'tokentrail.tokens'
#: LLM calls whose model is not on the rate card.
TOKENTRAIL_CALLS_UNPRICED = 'tokentrail.calls.unpriced'
#: Tokens per call by gen_ai.token.type.
GEN_AI_CLIENT_TOKEN_USAGE = 'gen_ai.client.token.usage'
#: Duration of one GenAI client operation.
GEN_AI_CLIENT_OPERATION_DURATION = 'gen_ai.client.operation.duration'

ALL_METRICS = (
    TOKENTRAIL_COST,
    TOKENTRAIL_TOKENS,
    TOKENTRAIL_CALLS_UNPRICED,
    GEN_AI_CLIENT_TOKEN_USAGE,
    GEN_AI_CLIENT_OPERATION_DURATION,
)
