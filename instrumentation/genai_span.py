"""One LLM call, one CLIENT span: the lifecycle every provider instrumentation shares.

A provider wrapper does::

    call = start_llm_call(tracer, provider=..., operation="chat", request_model=..., ...)
    # BudgetExceeded from the pre-flight checks propagates here; the span is already ended.
    with call.activate():              # HTTP spans made by the SDK become children
        result = wrapped(*args, **kwargs)
    call.set_response(model=..., response_id=..., finish_reasons=...)
    call.set_usage(usage_or_None)      # a malformed usage is recorded as no_usage, never raised
    call.end()                         # prices, ends exactly once, metrics fallback

Every method here is defensive: a bug in tokentrail must never reach the application, so
failures are logged at debug level and swallowed. The one exception that deliberately
propagates is the pre-flight ``BudgetExceeded``.

Optional collaborators (owner attributes, pricing, the metrics fallback) are imported lazily
and may be absent; the span is still produced without them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

try:
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
except ImportError:  # pragma: no cover - very old opentelemetry-instrumentation

    def is_instrumentation_enabled() -> bool:
        return True

from tokentrail import preflight, tasks
from tokentrail.attribution import owner_span_attributes
from tokentrail.instrumentation import coexistence
from tokentrail.processor import dedup
from tokentrail.processor.cost import pipeline_active
from tokentrail.processor.metrics import record_llm_call
from tokentrail.processor.pricing import price_span
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.semconv import attributes as attr

_log = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
COST_STATUS_NO_USAGE = "no_usage"

# Set while one of our wrappers runs the SDK call, so an SDK helper that calls another
# patched method (or a second instrumentation of the same call, see coexistence) adds no span.
_IN_LLM_CALL: ContextVar[bool] = ContextVar("tokentrail_in_llm_call", default=False)


# --------------------------------------------------------------------------------------------
# switches
# --------------------------------------------------------------------------------------------
def capture_content() -> bool:
    """Message content is recorded only when the user explicitly asks for it."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("true", "1", "yes")


def env_flag(name: str, default: bool = True) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in ("false", "0", "no", "off")


def should_skip() -> bool:
    """True when a wrapper must pass the call straight through (nested call or suppression)."""
    return _IN_LLM_CALL.get() or not is_instrumentation_enabled()


@contextmanager
def nested_calls_suppressed() -> Iterator[None]:
    """Inside this block our wrappers pass calls through (used around the wrapped SDK call)."""
    token = _IN_LLM_CALL.set(True)
    try:
        yield
    finally:
        _IN_LLM_CALL.reset(token)


def is_budget_exceeded(exc: BaseException) -> bool:
    """The deliberate pre-flight stop, recognised by class name so no import order matters."""
    return any(cls.__name__ == "BudgetExceeded" for cls in type(exc).__mro__)


def error_type(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    return type(exc).__qualname__


def owner_attributes() -> dict[str, Any]:
    try:
        return owner_span_attributes()
    except Exception:
        _log.debug("tokentrail: owner_span_attributes failed", exc_info=True)
        return {}


# --------------------------------------------------------------------------------------------
# the call
# --------------------------------------------------------------------------------------------
class LLMCall:
    """The span of one LLM call and what is known about it so far. Ends exactly once."""

    __slots__ = ("span", "attributes", "start_ns", "usage", "ended", "_late", "_usage_invalid", "providers")

    def __init__(self, span: trace.Span, attributes: dict[str, Any], start_ns: int) -> None:
        self.span = span
        self.attributes = attributes  # everything known, mirrored for pricing and metrics
        self.start_ns = start_ns
        self.usage: Usage | None = None
        self.ended = False
        self._late: dict[str, Any] = {}  # set on the span at end(), in one call
        self._usage_invalid = False
        self.providers: tuple[Any, Any] = (None, None)  # (tracer_provider, meter_provider) if given

    # --- recording ---------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        """Record an attribute (None is ignored)."""
        if value is not None and not self.ended:
            self._late[key] = value

    def set_response(
        self,
        *,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        service_tier: str | None = None,
    ) -> None:
        try:
            if isinstance(model, str) and model:
                self._late[attr.GEN_AI_RESPONSE_MODEL] = model
            if isinstance(response_id, str) and response_id:
                self._late[attr.GEN_AI_RESPONSE_ID] = response_id
            if finish_reasons:
                self._late[attr.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(str(r) for r in finish_reasons if r)
            if isinstance(service_tier, str) and service_tier:
                self._late[attr.TOKENTRAIL_SERVICE_TIER] = service_tier
        except Exception:
            _log.debug("tokentrail: set_response failed", exc_info=True)

    def set_usage(self, usage: Usage | None) -> None:
        """Keep a usage record; an inconsistent one is dropped (the call becomes no_usage)."""
        if usage is None:
            return
        try:
            self.usage = usage.validate()
            self._usage_invalid = False
        except (InvalidUsage, Exception):
            _log.debug("tokentrail: dropping malformed usage %r", usage, exc_info=True)
            self.usage = None
            self._usage_invalid = True

    def capture_messages(self, *, input_messages: Any = None, output_messages: Any = None) -> None:
        """Record message content as JSON, only when the user opted in (see ``capture_content``)."""
        if self.ended or not capture_content():
            return
        try:
            if input_messages is not None:
                self._late[attr.GEN_AI_INPUT_MESSAGES] = _json(input_messages)
            if output_messages is not None:
                self._late[attr.GEN_AI_OUTPUT_MESSAGES] = _json(output_messages)
        except Exception:
            _log.debug("tokentrail: capturing message content failed", exc_info=True)

    def set_error(self, exc: BaseException | str) -> None:
        if self.ended:
            return
        try:
            kind = error_type(exc)
            self._late[attr.ERROR_TYPE] = kind
            self.span.set_status(Status(StatusCode.ERROR, kind))
        except Exception:
            _log.debug("tokentrail: set_error failed", exc_info=True)

    def activate(self) -> "_Activation":
        """Make the span current (and mark that we are inside an LLM call) around the SDK call.

        Failures of our own context handling are swallowed; exceptions of the body pass through.
        """
        return _Activation(self.span)

    def run(self, wrapped: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Call the SDK inside this span. If it raises, the span ends with the error and the
        exception reaches the caller unchanged; otherwise the caller records and ends."""
        try:
            with self.activate():
                return wrapped(*args, **kwargs)
        except BaseException as exc:
            self.end(error=exc)
            raise

    async def run_async(self, wrapped: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """``run`` for coroutine methods."""
        try:
            with self.activate():
                return await wrapped(*args, **kwargs)
        except BaseException as exc:
            self.end(error=exc)
            raise

    # --- ending ----------------------------------------------------------------------------
    def end(self, error: BaseException | str | None = None) -> None:
        """Price and end the span; safe to call more than once (only the first call counts)."""
        if self.ended:
            return
        if error is not None:
            self.set_error(error)
        self.ended = True
        try:
            late = self._late
            if self.usage is not None:
                late.update(self.usage.to_attributes())
            merged = {**self.attributes, **late}
            late.update(_cost_attributes(merged, self.start_ns, self.usage is not None))
            merged.update(late)
            self.attributes = merged
            if late:
                self.span.set_attributes(late)
        except Exception:
            _log.debug("tokentrail: recording the end of an LLM call failed", exc_info=True)
        _call_ended(self.span, self.attributes)
        end_ns = time.time_ns()
        try:
            recording = self.span.is_recording()  # False once ended: ask first
            self.span.end(end_time=end_ns)
        except Exception:
            recording = False
            _log.debug("tokentrail: span.end failed", exc_info=True)
        _metrics_fallback(self.span, recording, self.attributes, (end_ns - self.start_ns) / 1e9, self.providers)


def _call_ended(span: trace.Span, attributes: Mapping[str, Any]) -> None:
    """Tell task and budget accounting (tokentrail.tasks) the priced call, while the span can
    still take attributes and events."""
    try:
        tasks.on_llm_call_end(span, attributes)
    except Exception:
        _log.debug("tokentrail: task accounting hook failed", exc_info=True)


_MAX_CONTENT_CHARS = 64 * 1024


def _json(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _MAX_CONTENT_CHARS else text[:_MAX_CONTENT_CHARS] + "...[truncated]"


def _cost_attributes(merged: Mapping[str, Any], start_ns: int, has_usage: bool) -> dict[str, Any]:
    try:
        return price_span(merged, start_ns)
    except Exception:
        _log.debug("tokentrail: price_span failed", exc_info=True)
    # price_span never raises; should it, a usage-less call is still marked.
    return {} if has_usage else {attr.TOKENTRAIL_COST_STATUS: COST_STATUS_NO_USAGE}


def _metrics_fallback(
    span: trace.Span, recording: bool, attributes: Mapping[str, Any], duration_s: float, providers: tuple[Any, Any]
) -> None:
    """Record metrics ourselves when no CostSpanProcessor will see the span (none installed,
    or the span is not recording, e.g. sampled out: processors never see those)."""
    try:
        tracer_provider, meter_provider = providers
        if recording and (pipeline_active(tracer_provider) if tracer_provider is not None else pipeline_active()):
            return
        extra = {"meter_provider": meter_provider} if meter_provider is not None else {}
        record_llm_call(attributes, duration_s, context=trace.set_span_in_context(span), **extra)
    except Exception:
        _log.debug("tokentrail: metrics fallback failed", exc_info=True)


class _Activation:
    """Context manager of ``LLMCall.activate`` (a class: cheaper than a generator-based one)."""

    __slots__ = ("span", "tokens")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.tokens: tuple[Any, Any] | None = None

    def __enter__(self) -> None:
        try:
            ctx = coexistence.call_context(trace.set_span_in_context(self.span))
            self.tokens = (otel_context.attach(ctx), _IN_LLM_CALL.set(True))
        except Exception:
            _log.debug("tokentrail: could not activate span", exc_info=True)

    def __exit__(self, *exc: Any) -> None:
        tokens = self.tokens
        if tokens is not None:
            self.tokens = None
            try:
                _IN_LLM_CALL.reset(tokens[1])
                otel_context.detach(tokens[0])
            except Exception:
                _log.debug("tokentrail: could not detach span context", exc_info=True)


class _NoOpCall(LLMCall):
    """Stands in when starting the span failed: every method is a harmless no-op."""

    def __init__(self) -> None:
        super().__init__(trace.INVALID_SPAN, {}, time.time_ns())
        self.ended = True

    def end(self, error: BaseException | str | None = None) -> None:
        return None


def start_llm_call(
    tracer: trace.Tracer,
    *,
    provider: str,
    operation: str,
    request_model: str | None,
    server_address: str | None = None,
    max_tokens: int | None = None,
    stream: bool | None = None,
    service_tier: str | None = None,
    estimated_input_tokens: int = 0,
    attributes: Mapping[str, Any] | None = None,
    check_budget: bool = True,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> LLMCall:
    """Start the span (name ``"{operation} {model}"``, kind CLIENT) and run the pre-flight checks.

    Raises only ``BudgetExceeded`` (after recording it and ending the span). Any other failure
    yields a no-op call so the wrapper can still run the SDK call untouched.
    ``check_budget=False`` records a call that was already paid for (e.g. a batch result being
    read), where stopping it would save nothing.
    ``tracer_provider`` / ``meter_provider``: the ones the instrumentor was given, if any, so the
    metrics fallback asks that provider whether a CostSpanProcessor is installed and records to
    that meter provider.
    """
    try:
        model = request_model if isinstance(request_model, str) and request_model else None
        attrs: dict[str, Any] = {
            attr.GEN_AI_PROVIDER_NAME: provider,
            attr.GEN_AI_OPERATION_NAME: operation,
        }
        if model:
            attrs[attr.GEN_AI_REQUEST_MODEL] = model
        if server_address:
            attrs[attr.SERVER_ADDRESS] = server_address
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            attrs[attr.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        if stream is not None:
            attrs[attr.GEN_AI_REQUEST_STREAM] = bool(stream)
        if isinstance(service_tier, str) and service_tier:
            attrs[attr.TOKENTRAIL_SERVICE_TIER] = service_tier
        if attributes:
            attrs.update((k, v) for k, v in attributes.items() if v is not None)
        attrs.update(owner_attributes())
        start_ns = time.time_ns()
        span = tracer.start_span(
            f"{operation} {model}" if model else operation,
            # Another instrumentation's span of this call around ours: ours takes its place.
            context=dedup.parent_context_for_our_span(),
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=start_ns,
        )
        dedup.register_ours(span)
        call = LLMCall(span, attrs, start_ns)
        if tracer_provider is not None or meter_provider is not None:
            call.providers = (tracer_provider, meter_provider)
    except Exception:
        _log.debug("tokentrail: could not start the LLM span", exc_info=True)
        return _NoOpCall()
    if not check_budget:
        return call
    try:
        planned = preflight.PlannedCall(
            provider=provider,
            model=model or "",
            estimated_input_tokens=max(0, int(estimated_input_tokens)),
            max_output_tokens=attrs.get(attr.GEN_AI_REQUEST_MAX_TOKENS),
            operation=operation,
            service_tier=service_tier if isinstance(service_tier, str) else None,
        )
        with call.activate():
            preflight.check(planned)
    except BaseException as exc:
        if is_budget_exceeded(exc):
            call.end(error=exc)
            raise
        _log.debug("tokentrail: a pre-flight check failed (ignored)", exc_info=True)
    return call
