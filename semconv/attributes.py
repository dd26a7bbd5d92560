"""Generated from registry.yaml by ``python -m tokentrail.semconv.generate``: do not edit."""


#: The GenAI provider as identified by the instrumentation (openai, anthropic, aws.bedrock, gcp.gemini, ...).
GEN_AI_PROVIDER_NAME = 'gen_ai.provider.name'
#: Deprecated provider name; read as a fallback for older instrumentations.
GEN_AI_SYSTEM = 'gen_ai.system'
#: The operation (chat, text_completion, embeddings, generate_content, invoke_agent, ...).
GEN_AI_OPERATION_NAME = 'gen_ai.operation.name'
#: The model the caller asked for.
GEN_AI_REQUEST_MODEL = 'gen_ai.request.model'
#: The maximum number of output tokens the caller allowed.
GEN_AI_REQUEST_MAX_TOKENS = 'gen_ai.request.max_tokens'
#: Set (true) on streaming requests only; unset means not streamed, as upstream specifies.
GEN_AI_REQUEST_STREAM = 'gen_ai.request.stream'
#: The model that actually answered.
GEN_AI_RESPONSE_MODEL = 'gen_ai.response.model'
#: The provider's id of the response.
GEN_AI_RESPONSE_ID = 'gen_ai.response.id'
#: Why the model stopped, one per choice.
GEN_AI_RESPONSE_FINISH_REASONS = 'gen_ai.response.finish_reasons'
#: All input tokens, including cache reads and cache writes.
GEN_AI_USAGE_INPUT_TOKENS = 'gen_ai.usage.input_tokens'
#: All output tokens, including reasoning tokens.
GEN_AI_USAGE_OUTPUT_TOKENS = 'gen_ai.usage.output_tokens'
#: Input tokens served from the provider's prompt cache.
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = 'gen_ai.usage.cache_read.input_tokens'
#: Input tokens written to the provider's prompt cache.
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = 'gen_ai.usage.cache_write.input_tokens'
#: Former name of the cache-write count; read as a fallback.
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = 'gen_ai.usage.cache_creation.input_tokens'
#: Output tokens spent on reasoning (part of output_tokens).
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = 'gen_ai.usage.reasoning.output_tokens'
#: The conversation or session the call belongs to.
GEN_AI_CONVERSATION_ID = 'gen_ai.conversation.id'
#: The prompt messages as JSON; recorded only when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
GEN_AI_INPUT_MESSAGES = 'gen_ai.input.messages'
#: The model's answer messages as JSON; recorded only when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
GEN_AI_OUTPUT_MESSAGES = 'gen_ai.output.messages'
#: The agent's name, on invoke_agent spans.
GEN_AI_AGENT_NAME = 'gen_ai.agent.name'
#: input or output, on gen_ai.client.token.usage points.
GEN_AI_TOKEN_TYPE = 'gen_ai.token.type'
#: The end user on whose behalf the call was made.
USER_ID = 'user.id'
#: The class of error the call ended with.
ERROR_TYPE = 'error.type'
#: The host the request was sent to.
SERVER_ADDRESS = 'server.address'
#: The port the request was sent to (set with server.address).
SERVER_PORT = 'server.port'
#: The deployment environment (production, staging, ...), a resource attribute.
DEPLOYMENT_ENVIRONMENT_NAME = 'deployment.environment.name'
#: The cost of the call in USD, computed at the time of the call.
GEN_AI_USAGE_COST_AMOUNT = 'gen_ai.usage.cost.amount'
#: Currency of the cost, always USD.
GEN_AI_USAGE_COST_CURRENCY = 'gen_ai.usage.cost.currency'
#: Where the cost came from; `local` when tokentrail priced it from its rate card.
GEN_AI_USAGE_COST_SOURCE = 'gen_ai.usage.cost.source'
#: The customer (tenant) that owns the call.
TOKENTRAIL_TENANT = 'tokentrail.tenant'
#: The product feature that made the call.
TOKENTRAIL_FEATURE = 'tokentrail.feature'
#: The team that owns the service or feature.
TOKENTRAIL_TEAM = 'tokentrail.team'
#: Cost of uncached input tokens.
TOKENTRAIL_COST_INPUT = 'tokentrail.cost.input'
#: Cost of input tokens read from cache.
TOKENTRAIL_COST_CACHE_READ = 'tokentrail.cost.cache_read'
#: Cost of input tokens written to cache.
TOKENTRAIL_COST_CACHE_WRITE = 'tokentrail.cost.cache_write'
#: Cost of output tokens, reasoning included.
TOKENTRAIL_COST_OUTPUT = 'tokentrail.cost.output'
#: Per-request and tool fees (web searches, ...).
TOKENTRAIL_COST_FEES = 'tokentrail.cost.fees'
#: What the call's cache reads saved, the cache-read tokens at the fresh input price minus what they cost (only on calls with cache reads).
TOKENTRAIL_COST_CACHE_SAVINGS = 'tokentrail.cost.cache_savings'
#: The exact total cost in integer nano-USD, for sums that must not drift.
TOKENTRAIL_COST_NANO_USD = 'tokentrail.cost.nano_usd'
#: priced | unpriced (model not on the rate card) | no_usage (the call reported no usable usage).
TOKENTRAIL_COST_STATUS = 'tokentrail.cost.status'
#: True when a stream ended (cut, closed or abandoned) before its final usage; the call is priced on the counts reported so far (Anthropic - message_start's input and cache counts, and its placeholder output count).
TOKENTRAIL_USAGE_PARTIAL = 'tokentrail.usage.partial'
#: Identifies the price data (genai-prices version + overlay digests) used for the cost.
TOKENTRAIL_RATE_CARD_VERSION = 'tokentrail.rate_card.version'
#: Service tier priced (standard, batch, flex, priority), plus the context tier when one applied (e.g. standard,context>200k).
TOKENTRAIL_PRICING_TIER = 'tokentrail.pricing.tier'
#: The rate-card model id the call was priced as (after alias and snapshot resolution).
TOKENTRAIL_PRICING_MODEL = 'tokentrail.pricing.model'
#: The part of the cache writes made with a 1-hour lifetime (priced higher than 5-minute writes).
TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS = 'tokentrail.usage.cache_write_1h.input_tokens'
#: Billable server-side tool calls as `name=count` pairs joined by commas (e.g. web_search=2).
TOKENTRAIL_USAGE_TOOL_CALLS = 'tokentrail.usage.tool_calls'
#: The service tier requested or reported (batch, flex, priority, ...), input to pricing.
TOKENTRAIL_SERVICE_TIER = 'tokentrail.service_tier'
#: Why tokentrail cannot vouch that this call is counted once, as kind:detail (several joined by ;): defer_shared_sdk:SDK[,SDK] (TOKENTRAIL_COEXISTENCE=defer and two other instrumentations of one SDK), foreign_tracer_provider:TYPE (the TracerProvider is not the SDK's), ledger_without_cost_processor:SCOPE (another instrumentation's LLM spans reach the ledger with no CostSpanProcessor); process-wide from detection on; absent when it can.
TOKENTRAIL_UNVERIFIED = 'tokentrail.unverified'
#: input (uncached) | cache_read | cache_write | output | reasoning, on tokentrail.tokens points.
TOKENTRAIL_TOKEN_TYPE = 'tokentrail.token.type'
#: False on spans and metric points with no tenant (unattributed spend is counted, never dropped).
TOKENTRAIL_ATTRIBUTED = 'tokentrail.attributed'
#: The task (unit of work, e.g. an agent run) the span belongs to; set on every span inside tokentrail.task().
TOKENTRAIL_TASK_NAME = 'tokentrail.task.name'
#: The id of this task run (caller-given or generated), on every span inside the task.
TOKENTRAIL_TASK_ID = 'tokentrail.task.id'
#: The 1-based number of this LLM call within its task.
TOKENTRAIL_TASK_CALL_INDEX = 'tokentrail.task.call_index'
#: ok | error | budget_exceeded, on the task span and tokentrail.task.cost points.
TOKENTRAIL_TASK_OUTCOME = 'tokentrail.task.outcome'
#: LLM calls made inside the task (on the task span).
TOKENTRAIL_TASK_CALLS = 'tokentrail.task.calls'
#: Total priced cost of the task's LLM calls (on the task span).
TOKENTRAIL_TASK_COST_TOTAL = 'tokentrail.task.cost.total'
#: Exact total cost of the task's LLM calls in integer nano-USD.
TOKENTRAIL_TASK_COST_NANO_USD = 'tokentrail.task.cost.nano_usd'
#: Part of the task cost spent on retried attempts (calls with tokentrail.retry.attempt > 0).
TOKENTRAIL_TASK_COST_RETRIES = 'tokentrail.task.cost.retries'
#: Part of the task cost spent on fallback calls (calls with tokentrail.fallback.from).
TOKENTRAIL_TASK_COST_FALLBACKS = 'tokentrail.task.cost.fallbacks'
#: Calls in the task that could not be priced (their cost is missing from the total, not zero).
TOKENTRAIL_TASK_CALLS_UNPRICED = 'tokentrail.task.calls.unpriced'
#: Uncached input tokens of the task's LLM calls.
TOKENTRAIL_TASK_TOKENS_INPUT = 'tokentrail.task.tokens.input'
#: Cache-read input tokens of the task's LLM calls.
TOKENTRAIL_TASK_TOKENS_CACHE_READ = 'tokentrail.task.tokens.cache_read'
#: Cache-write input tokens of the task's LLM calls.
TOKENTRAIL_TASK_TOKENS_CACHE_WRITE = 'tokentrail.task.tokens.cache_write'
#: Output tokens (reasoning included) of the task's LLM calls.
TOKENTRAIL_TASK_TOKENS_OUTPUT = 'tokentrail.task.tokens.output'
#: Reasoning tokens of the task's LLM calls (part of output).
TOKENTRAIL_TASK_TOKENS_REASONING = 'tokentrail.task.tokens.reasoning'
#: The task's USD budget, when one was set.
TOKENTRAIL_TASK_BUDGET_USD = 'tokentrail.task.budget_usd'
#: 0 for a first attempt; n for the n-th retry (application retries via tokentrail.retry(), or SDK-internal HTTP retries counted on the call's span).
TOKENTRAIL_RETRY_ATTEMPT = 'tokentrail.retry.attempt'
#: On a fallback call, the model that was asked for first.
TOKENTRAIL_FALLBACK_FROM = 'tokentrail.fallback.from'
#: Why inbound baggage attribution was ignored: unsigned | bad_signature | invalid_value | cardinality.
TOKENTRAIL_ATTRIBUTION_REJECTION = 'tokentrail.attribution.rejection'
#: The limit that stopped the call before it was sent (budget_usd | max_calls | max_usd_per_minute | tenant budget | team budget).
TOKENTRAIL_BUDGET_EXCEEDED = 'tokentrail.budget.exceeded'
#: The budget window: day | month (on tokentrail.budget.* points).
TOKENTRAIL_BUDGET_WINDOW = 'tokentrail.budget.window'
#: The budget fraction crossed (e.g. 0.8), on budget warning events and points.
TOKENTRAIL_BUDGET_FRACTION = 'tokentrail.budget.fraction'
#: The provider project the call was billed to (OpenAI project id), when the client sets one.
TOKENTRAIL_PROVIDER_PROJECT = 'tokentrail.provider.project'
#: The provider organization the call was billed to (OpenAI organization id), when the client sets one.
TOKENTRAIL_PROVIDER_ORGANIZATION = 'tokentrail.provider.organization'
#: The provider workspace the key belongs to (Anthropic workspace id), when configured (TOKENTRAIL_ANTHROPIC_WORKSPACE).
TOKENTRAIL_PROVIDER_WORKSPACE = 'tokentrail.provider.workspace'
#: The API key's non-secret hint, as the admin APIs list it (first 8 and last 4 characters: sk-proj-...a1b2), never the key.
TOKENTRAIL_PROVIDER_API_KEY_HINT = 'tokentrail.provider.api_key_hint'

ALL_ATTRIBUTES = (
    GEN_AI_PROVIDER_NAME,
    GEN_AI_SYSTEM,
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    GEN_AI_CONVERSATION_ID,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_AGENT_NAME,
    GEN_AI_TOKEN_TYPE,
    USER_ID,
    ERROR_TYPE,
    SERVER_ADDRESS,
    SERVER_PORT,
    DEPLOYMENT_ENVIRONMENT_NAME,
    GEN_AI_USAGE_COST_AMOUNT,
    GEN_AI_USAGE_COST_CURRENCY,
    GEN_AI_USAGE_COST_SOURCE,
    TOKENTRAIL_TENANT,
    TOKENTRAIL_FEATURE,
    TOKENTRAIL_TEAM,
    TOKENTRAIL_COST_INPUT,
    TOKENTRAIL_COST_CACHE_READ,
    TOKENTRAIL_COST_CACHE_WRITE,
    TOKENTRAIL_COST_OUTPUT,
    TOKENTRAIL_COST_FEES,
    TOKENTRAIL_COST_CACHE_SAVINGS,
    TOKENTRAIL_COST_NANO_USD,
    TOKENTRAIL_COST_STATUS,
    TOKENTRAIL_USAGE_PARTIAL,
    TOKENTRAIL_RATE_CARD_VERSION,
    TOKENTRAIL_PRICING_TIER,
    TOKENTRAIL_PRICING_MODEL,
    TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS,
    TOKENTRAIL_USAGE_TOOL_CALLS,
    TOKENTRAIL_SERVICE_TIER,
    TOKENTRAIL_UNVERIFIED,
    TOKENTRAIL_TOKEN_TYPE,
    TOKENTRAIL_ATTRIBUTED,
    TOKENTRAIL_TASK_NAME,
    TOKENTRAIL_TASK_ID,
    TOKENTRAIL_TASK_CALL_INDEX,
    TOKENTRAIL_TASK_OUTCOME,
    TOKENTRAIL_TASK_CALLS,
    TOKENTRAIL_TASK_COST_TOTAL,
    TOKENTRAIL_TASK_COST_NANO_USD,
    TOKENTRAIL_TASK_COST_RETRIES,
    TOKENTRAIL_TASK_COST_FALLBACKS,
    TOKENTRAIL_TASK_CALLS_UNPRICED,
    TOKENTRAIL_TASK_TOKENS_INPUT,
    TOKENTRAIL_TASK_TOKENS_CACHE_READ,
    TOKENTRAIL_TASK_TOKENS_CACHE_WRITE,
    TOKENTRAIL_TASK_TOKENS_OUTPUT,
    TOKENTRAIL_TASK_TOKENS_REASONING,
    TOKENTRAIL_TASK_BUDGET_USD,
    TOKENTRAIL_RETRY_ATTEMPT,
    TOKENTRAIL_FALLBACK_FROM,
    TOKENTRAIL_ATTRIBUTION_REJECTION,
    TOKENTRAIL_BUDGET_EXCEEDED,
    TOKENTRAIL_BUDGET_WINDOW,
    TOKENTRAIL_BUDGET_FRACTION,
    TOKENTRAIL_PROVIDER_PROJECT,
    TOKENTRAIL_PROVIDER_ORGANIZATION,
    TOKENTRAIL_PROVIDER_WORKSPACE,
    TOKENTRAIL_PROVIDER_API_KEY_HINT,
)
