"""OpenTelemetry instrumentation of the openai SDK (OpenAI and OpenAI-compatible endpoints).

``OpenAIInstrumentor().instrument(tracer_provider=...)`` patches chat.completions
(create, parse, and so stream), responses (create, parse, and so stream; beta.responses),
embeddings and legacy completions, sync and async, including ``with_raw_response`` /
``with_streaming_response``. Each call yields one CLIENT span ``"{operation} {model}"`` with
usage, owner and cost attributes.

Modules: ``patch`` (wrappers, request planning), ``usage`` (pure usage extraction),
``streaming`` (stream states, result recording), ``providers`` (base_url -> provider),
``content`` (opt-in message content), ``batch`` (Batch API results).
Batch API results are priced at the batch tier when their output file is read
(``files.content``; see ``batch``). A billed answer the SDK raises over (``parse`` and the
stream helpers, on an answer cut at max tokens or by the content filter) is priced, with
``error.type`` (see ``patch`` and ``streaming``).

Environment:
- ``TOKENTRAIL_OPENAI_INJECT_STREAM_USAGE=false`` (read by ``instrument()``): do not add
  ``stream_options.include_usage`` to streamed chat calls (streamed spans then have no usage
  unless the caller asked for it).
- ``TOKENTRAIL_OPENAI_PROVIDER``: force the provider name (see ``providers``).
- ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (read by ``instrument()``): message
  content is never recorded unless this is true.

Coexistence: ``TOKENTRAIL_COEXISTENCE=defer`` leaves the SDK to another OpenAI
instrumentation (whose spans our processor then prices). At call time our wrappers pass
through when OpenTelemetry's suppress-instrumentation flag is set or when the call is nested
inside another tokentrail LLM span.
"""

from __future__ import annotations

from functools import partial
from typing import Collection

from tokentrail import tasks
from tokentrail.instrumentation.base import Target, TokentrailInstrumentor, sync_and_async
from tokentrail.instrumentation.openai import batch, patch, streaming

_CHAT = "openai.resources.chat.completions.completions"
_RESPONSES = "openai.resources.responses.responses"
_BETA_RESPONSES = "openai.resources.beta.responses.responses"
_COMPLETIONS = "openai.resources.completions"
_EMBEDDINGS = "openai.resources.embeddings"
_FILES = "openai.resources.files"
_CHAT_HELPER = "openai.lib.streaming.chat._completions"
_RESPONSE_PARSING = "openai.lib._response_resources"
_RESPONSES_HELPER = "openai.lib.streaming.responses._responses"


class OpenAIInstrumentor(TokentrailInstrumentor):
    """Instruments the openai SDK with tokentrail LLM spans."""

    provider = "openai"
    tracer_name = "tokentrail.instrumentation.openai"
    switches = {patch.INJECT_STREAM_USAGE_ENV: True}
    targets = (
        *sync_and_async(_CHAT, "Completions.create", "AsyncCompletions.create", partial(patch.wrapper, patch.CHAT)),
        *sync_and_async(_CHAT, "Completions.parse", "AsyncCompletions.parse",
                        partial(patch.wrapper, patch.CHAT, parses=True), optional=True),
        *sync_and_async(_RESPONSES, "Responses.create", "AsyncResponses.create",
                        partial(patch.wrapper, patch.RESPONSES), optional=True),
        *sync_and_async(_RESPONSES, "Responses.parse", "AsyncResponses.parse",
                        partial(patch.wrapper, patch.RESPONSES, parses=True), optional=True),
        # the Response responses.parse hands its text_format: priced should parsing it fail
        Target(_RESPONSE_PARSING, "parse_response", patch.parse_response_wrapper, optional=True),
        *sync_and_async(_BETA_RESPONSES, "Responses.create", "AsyncResponses.create",
                        partial(patch.wrapper, patch.RESPONSES), optional=True),
        *sync_and_async(_COMPLETIONS, "Completions.create", "AsyncCompletions.create",
                        partial(patch.wrapper, patch.COMPLETIONS)),
        *sync_and_async(_EMBEDDINGS, "Embeddings.create", "AsyncEmbeddings.create",
                        partial(patch.wrapper, patch.EMBEDDINGS)),
        # chat.completions.stream(): the SDK's helper sees every chunk (its final completion keeps usage)
        Target(_CHAT_HELPER, "ChatCompletionStream.__init__", streaming.stream_helper_wrapper, optional=True),
        Target(_CHAT_HELPER, "AsyncChatCompletionStream.__init__", streaming.stream_helper_wrapper, optional=True),
        # responses.stream(text_format=...): the helper parses the terminal response (may raise on it)
        Target(_RESPONSES_HELPER, "ResponseStream.__init__", streaming.responses_helper_wrapper, optional=True),
        Target(_RESPONSES_HELPER, "AsyncResponseStream.__init__", streaming.responses_helper_wrapper, optional=True),
        # Batch API results are priced (batch tier) when their output file is downloaded.
        *sync_and_async(_FILES, "Files.content", "AsyncFiles.content", batch.files_content_wrapper),
        # one LLM span per user call; the SDK's internal HTTP retries are counted on it
        Target("openai._base_client", "BaseClient._build_request", lambda instruments: tasks.stainless_retry_method,
               optional=True, plain=True),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.40",)


__all__ = ["OpenAIInstrumentor"]
