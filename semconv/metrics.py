"""Generated from registry.yaml by ``python -m tokentrail.semconv.generate``: do not edit."""


#: Cost of one LLM call in USD (one point per call, USD-sized buckets).
TOKENTRAIL_COST = 'tokentrail.cost'
#: Tokens by tokentrail.token.type (input means uncached input).
TOKENTRAIL_TOKENS = 'tokentrail.tokens'
#: LLM calls whose model is not on the rate card.
TOKENTRAIL_CALLS_UNPRICED = 'tokentrail.calls.unpriced'
#: Usage reports rejected as implausible (a token count beyond 100M in one call); the call is no_usage and its counts reach no other metric, cost or ledger sum.
TOKENTRAIL_USAGE_IMPLAUSIBLE = 'tokentrail.usage.implausible'
#: Never reports a point. Its callback, run as a reader collects, adds the per-call sums tokentrail keeps (its counters and histograms, the gen_ai.client.* histograms) to the SDK's own aggregations.
TOKENTRAIL_SUMS_COLLECT = 'tokentrail.sums.collect'
#: Tokens per call by gen_ai.token.type (by default; not under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental).
GEN_AI_CLIENT_TOKEN_USAGE = 'gen_ai.client.token.usage'
#: Duration of one GenAI client operation (by default; not under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental).
GEN_AI_CLIENT_OPERATION_DURATION = 'gen_ai.client.operation.duration'
#: Duration of one model call (chat, text_completion, generate_content), under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental.
GEN_AI_CLIENT_INFERENCE_DURATION = 'gen_ai.client.inference.duration'
#: Input tokens (cached included) per model call, under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental.
GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS = 'gen_ai.client.inference.operation.input_tokens'
#: Output tokens (reasoning included) per model call, under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental.
GEN_AI_CLIENT_INFERENCE_OPERATION_OUTPUT_TOKENS = 'gen_ai.client.inference.operation.output_tokens'
#: Duration of one embeddings call, under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental.
GEN_AI_CLIENT_EMBEDDINGS_DURATION = 'gen_ai.client.embeddings.duration'
#: Input tokens per embeddings call, under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental.
GEN_AI_CLIENT_EMBEDDINGS_OPERATION_INPUT_TOKENS = 'gen_ai.client.embeddings.operation.input_tokens'
#: USD saved by prompt-cache reads (the sum of tokentrail.cost.cache_savings), by owner and model.
TOKENTRAIL_CACHE_SAVINGS = 'tokentrail.cache.savings'
#: USD of LLM calls that were retries (tokentrail.retry.attempt > 0); a part of tokentrail.cost, for the share of spend that was retries.
TOKENTRAIL_COST_RETRIES = 'tokentrail.cost.retries'
#: USD of fallback LLM calls (tokentrail.fallback.from set); a part of tokentrail.cost.
TOKENTRAIL_COST_FALLBACKS = 'tokentrail.cost.fallbacks'
#: Cost of one task run in USD, by task name, owner and outcome (cost per successful task, its p95).
TOKENTRAIL_TASK_COST = 'tokentrail.task.cost'
#: LLM calls made by one task run (its iteration count), by task name, owner and outcome.
TOKENTRAIL_TASK_ITERATIONS = 'tokentrail.task.iterations'
#: Inbound baggage attribution values ignored at the trust boundary, by tokentrail.attribution.rejection.
TOKENTRAIL_ATTRIBUTION_REJECTED = 'tokentrail.attribution.rejected'
#: Configured tenant/team budget, by owner and tokentrail.budget.window.
TOKENTRAIL_BUDGET_LIMIT = 'tokentrail.budget.limit'
#: Spend counted against a tenant/team budget in its current window, by owner and window.
TOKENTRAIL_BUDGET_SPENT = 'tokentrail.budget.spent'
#: Budget warning thresholds crossed, by owner, window and tokentrail.budget.fraction.
TOKENTRAIL_BUDGET_WARNINGS = 'tokentrail.budget.warnings'
#: LLM calls stopped before sending by a breaker, by tokentrail.budget.exceeded.
TOKENTRAIL_BUDGET_BLOCKED = 'tokentrail.budget.blocked'
#: Failures of the shared budget counter (Redis); the call proceeds when fail-open.
TOKENTRAIL_BUDGET_STORE_ERRORS = 'tokentrail.budget.store.errors'
#: A margin budget's spend in its current window over the tenant's plan revenue for that window (0.5 = half the revenue), by tenant and tokentrail.budget.window; the most burning tenants up to the cardinality limit.
TOKENTRAIL_PLAN_BURN = 'tokentrail.plan.burn'
#: Budget warnings not delivered to the webhook (every retry failed, or dropped from a full queue: error.type queue_full), by error.type.
TOKENTRAIL_NOTIFY_FAILURES = 'tokentrail.notify.failures'

ALL_METRICS = (
    TOKENTRAIL_COST,
    TOKENTRAIL_TOKENS,
    TOKENTRAIL_CALLS_UNPRICED,
    TOKENTRAIL_USAGE_IMPLAUSIBLE,
    TOKENTRAIL_SUMS_COLLECT,
    GEN_AI_CLIENT_TOKEN_USAGE,
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_INFERENCE_DURATION,
    GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS,
    GEN_AI_CLIENT_INFERENCE_OPERATION_OUTPUT_TOKENS,
    GEN_AI_CLIENT_EMBEDDINGS_DURATION,
    GEN_AI_CLIENT_EMBEDDINGS_OPERATION_INPUT_TOKENS,
    TOKENTRAIL_CACHE_SAVINGS,
    TOKENTRAIL_COST_RETRIES,
    TOKENTRAIL_COST_FALLBACKS,
    TOKENTRAIL_TASK_COST,
    TOKENTRAIL_TASK_ITERATIONS,
    TOKENTRAIL_ATTRIBUTION_REJECTED,
    TOKENTRAIL_BUDGET_LIMIT,
    TOKENTRAIL_BUDGET_SPENT,
    TOKENTRAIL_BUDGET_WARNINGS,
    TOKENTRAIL_BUDGET_BLOCKED,
    TOKENTRAIL_BUDGET_STORE_ERRORS,
    TOKENTRAIL_PLAN_BURN,
    TOKENTRAIL_NOTIFY_FAILURES,
)
