"""One LLM call, one CLIENT span: the lifecycle every provider instrumentation shares.

A provider wraps an SDK method with ``llm_call_wrapper(instruments, begin, finish)``:
``begin`` reads the request and starts the call (``start_llm_call``, which runs the pre-flight
checks), the template runs the SDK call inside the span, ``finish`` records the result
(``set_response``, ``read_usage``) and ends the call, or hands back a stream proxy that ends it.
``result_wrapper`` observes a result without a call of its own (batch results being read).

Everything here is defensive: a bug in tokentrail must never reach the application, so
failures are logged at debug level and swallowed, and the SDK's results and exceptions reach
the caller unchanged. The one exception that deliberately propagates is the pre-flight
``BudgetExceeded``.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any, Callable, Mapping, NamedTuple, Sequence
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation import utils as instrumentation_utils
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode

from tokentrail import preflight, tasks
from tokentrail.errors import BudgetExceeded
from tokentrail.instrumentation import coexistence
from tokentrail.instrumentation.base import Instruments
from tokentrail.processor import dedup, sdk
from tokentrail.processor.attribution import owner_stamp
from tokentrail.processor.cost import pipeline_active
from tokentrail.processor.metrics import record_llm_call
from tokentrail.processor.pricing import NO_USAGE, price_span
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedMemo

_log = logging.getLogger(__name__)

# Set while one of our wrappers runs the SDK call, so an SDK helper that calls another
# patched method (or a second instrumentation of the same call, see coexistence) adds no span.
_IN_LLM_CALL: ContextVar[bool] = ContextVar("tokentrail_in_llm_call", default=False)


# The keys is_instrumentation_enabled() reads, so a call looks the current context up once, not twice.
_SUPPRESS_KEYS = tuple(getattr(instrumentation_utils, name, None) for name in (
    "_SUPPRESS_INSTRUMENTATION_KEY", "_SUPPRESS_INSTRUMENTATION_KEY_PLAIN"))


def should_skip() -> bool:
    """True when a wrapper must pass the call straight through (nested call or suppression)."""
    if _IN_LLM_CALL.get():
        return True
    if None in _SUPPRESS_KEYS:  # an opentelemetry-instrumentation without them: ask it
        return not is_instrumentation_enabled()
    ctx = otel_context.get_current()
    return bool(ctx.get(_SUPPRESS_KEYS[0]) or ctx.get(_SUPPRESS_KEYS[1]))


def in_llm_call() -> bool:
    """Whether one of our wrappers is running an SDK call right now (its span is current)."""
    return _IN_LLM_CALL.get()


def error_type(exc: BaseException | str) -> str:
    """``error.type``: an AWS error code for botocore errors (ThrottlingException, ...), else
    the exception's class name."""
    if isinstance(exc, str):
        return exc
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if isinstance(code, str) and code:
            return code
    return type(exc).__qualname__


def owner_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """What AttributionSpanProcessor would stamp on a span starting with ``attributes`` (it
    skips ours): the owner, and ``tokentrail.attributed`` (a tenant is set)."""
    try:
        return owner_stamp(attributes)
    except Exception:
        _log.debug("tokentrail: owner_stamp failed", exc_info=True)
        return {}


# --------------------------------------------------------------------------------------------
# the call
# --------------------------------------------------------------------------------------------
class LLMCall:
    """The span of one LLM call and what is known about it so far. Ends exactly once."""

    __slots__ = ("span", "attributes", "start_ns", "usage", "ended", "_late", "instruments")

    def __init__(self, span: trace.Span, attributes: dict[str, Any], start_ns: int,
                 instruments: Instruments | None = None) -> None:
        self.span = span
        self.attributes = attributes  # everything known, mirrored for pricing and metrics
        self.start_ns = start_ns
        self.usage: Usage | None = None
        self.ended = False
        self._late: dict[str, Any] = {}  # set on the span at end(), in one call
        self.instruments = instruments

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
        except Exception:
            _log.debug("tokentrail: dropping malformed usage %r", usage, exc_info=True)
            self.usage = None

    def read_usage(self, read: Callable[..., Usage | None], *args: Any) -> None:
        """``set_usage(read(*args))``; a malformed usage block (``InvalidUsage``) or a failing
        reader leaves the call without usage (no_usage), never an error."""
        try:
            usage = read(*args)
        except InvalidUsage as exc:
            _log.debug("tokentrail: malformed usage: %s", exc)
            return
        except Exception:
            _log.debug("tokentrail: reading usage failed", exc_info=True)
            return
        if usage is not None and getattr(read, "validated", False):  # fields.validated: checked by the reader
            self.usage = usage
            return
        self.set_usage(usage)

    @property
    def capture_content(self) -> bool:
        """Whether the user asked for message content (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``)."""
        return self.instruments is not None and self.instruments.capture_content

    def capture_messages(self, *, input_messages: Any = None, output_messages: Any = None) -> None:
        """Record message content as JSON, only when the user opted in."""
        if self.ended or not self.capture_content:
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
            cost = _cost_attributes(merged, self.start_ns, self.usage is not None)
            late.update(cost)
            merged.update(cost)  # the rest of late is in merged already
            self.attributes = merged
            if late:
                sdk.set_span_attributes(self.span, late)
        except Exception:
            _log.debug("tokentrail: recording the end of an LLM call failed", exc_info=True)
        _call_ended(self.span, self.attributes)
        end_ns = time.time_ns()
        try:
            recording = self.span.is_recording()  # False once ended: ask first
            if recording:
                dedup.ours_ended(self.span, self.attributes, self.start_ns, end_ns)
            self.span.end(end_time=end_ns)
        except Exception:
            recording = False
            _log.debug("tokentrail: span.end failed", exc_info=True)
        _metrics_fallback(self.span, recording, self.attributes, (end_ns - self.start_ns) / 1e9, self.instruments)


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
    return {} if has_usage else {attr.TOKENTRAIL_COST_STATUS: NO_USAGE}


def _metrics_fallback(span: trace.Span, recording: bool, attributes: Mapping[str, Any], duration_s: float,
                      instruments: Instruments | None) -> None:
    """Record metrics ourselves when no CostSpanProcessor will see the span (none on the
    instrumentor's tracer provider, or the span is not recording, e.g. sampled out:
    processors never see those), to the instrumentor's meter provider."""
    try:
        tracer_provider = instruments.tracer_provider if instruments is not None else None
        if recording and pipeline_active(tracer_provider):
            return
        resource = getattr(tracer_provider, "resource", None)
        record_llm_call(
            attributes,
            duration_s,
            meter_provider=instruments.meter_provider if instruments is not None else None,
            context=trace.set_span_in_context(span),
            resource_attributes=getattr(resource, "attributes", None),
        )
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
            # trace.set_span_in_context(span) and the coexistence values, in one copy of the context
            values = dict(otel_context.get_current())
            values[_SPAN_KEY] = self.span
            values.update(coexistence.CALL_CONTEXT_VALUES)
            self.tokens = (otel_context.attach(otel_context.Context(values)), _IN_LLM_CALL.set(True))
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


# the context key of the current span, found through the public API
_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context())))


class _NoActivation:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


_NO_ACTIVATION = _NoActivation()


class _NoOpCall(LLMCall):
    """Stands in when starting the span failed: the SDK call runs as if uninstrumented."""

    def __init__(self) -> None:
        super().__init__(trace.INVALID_SPAN, {}, time.time_ns())
        self.ended = True

    def activate(self) -> Any:  # type: ignore[override]
        return _NO_ACTIVATION

    def end(self, error: BaseException | str | None = None) -> None:
        return None


_DEFAULT_PORTS = {"https": 443, "http": 80}

# str() of an httpx URL is built anew each time (about 4 µs); a URL object is immutable, so
# its text is remembered per object (held here, so its id cannot be reused while remembered).
_url_texts: dict[int, tuple[Any, str]] = {}
_MAX_URL_TEXTS = 64
_immutable_url_types: dict[type, bool] = {}


def url_text(url: Any) -> str:
    """``str(url)``, remembered for the SDKs' (immutable) httpx URL objects."""
    kind = type(url)
    if kind is str:
        return url
    immutable = _immutable_url_types.get(kind)
    if immutable is None:
        immutable = _immutable_url_types[kind] = (
            kind.__name__ == "URL" and kind.__module__.partition(".")[0] in ("httpx", "httpx2"))
    if not immutable:
        return str(url)
    hit = _url_texts.get(id(url))
    if hit is not None and hit[0] is url:
        return hit[1]
    text = str(url)
    if len(_url_texts) >= _MAX_URL_TEXTS:
        _url_texts.clear()
    _url_texts[id(url)] = (url, text)
    return text


def _server_of_text(text: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except (TypeError, ValueError):
        return None, None
    return (host, port) if host else (None, None)


_servers: BoundedMemo[str, tuple[str | None, int | None]] = BoundedMemo(256)


def server_of(url: Any) -> tuple[str | None, int | None]:
    """(server.address, server.port) of a client's base URL; the scheme's port when none is given
    (cheap: memoised per URL, as every call asks)."""
    return _servers.get(url_text(url), _server_of_text)


def start_llm_call(
    instruments: Instruments,
    *,
    provider: str,
    operation: str,
    request_model: str | None,
    server_address: str | None = None,
    server_port: int | None = None,
    max_tokens: int | None = None,
    stream: bool | None = None,
    service_tier: str | None = None,
    estimated_input_tokens: int | Callable[[], int] = 0,
    attributes: Mapping[str, Any] | None = None,
    check_budget: bool = True,
    choices: Any = 1,
) -> LLMCall:
    """Start the span (name ``"{operation} {model}"``, kind CLIENT) and run the pre-flight checks.

    Raises only ``BudgetExceeded`` (after recording it and ending the span). Any other failure
    yields a no-op call so the wrapper can still run the SDK call untouched.
    ``check_budget=False`` records a call that was already paid for (e.g. a batch result being
    read), where stopping it would save nothing.
    ``choices``: completions generated per request (OpenAI ``n``), for the worst-case output.
    ``estimated_input_tokens`` may be a function: it is called only when a breaker applies.
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
            if isinstance(server_port, int) and not isinstance(server_port, bool):
                attrs[attr.SERVER_PORT] = server_port
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            attrs[attr.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        if stream:  # upstream: set if and only if the request streams (unset means it does not)
            attrs[attr.GEN_AI_REQUEST_STREAM] = True
        if isinstance(service_tier, str) and service_tier:
            attrs[attr.TOKENTRAIL_SERVICE_TIER] = service_tier
        if attributes:
            attrs.update((k, v) for k, v in attributes.items() if v is not None)
        attrs.update(owner_attributes(attrs))
        start_ns = time.time_ns()
        span = instruments.tracer.start_span(
            f"{operation} {model}" if model else operation,
            # Another instrumentation's span of this call around ours: ours takes its place.
            context=dedup.parent_context_for_our_span(),
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=start_ns,
        )
        dedup.register_ours(span)
        call = LLMCall(span, attrs, start_ns, instruments)
    except Exception:
        _log.debug("tokentrail: could not start the LLM span", exc_info=True)
        return _NoOpCall()
    try:
        # With no budget configured and no task open nothing can stop the call: no estimate, no check.
        if not check_budget or not preflight.armed():
            return call
        estimate = estimated_input_tokens() if callable(estimated_input_tokens) else estimated_input_tokens
        planned = preflight.PlannedCall(
            provider=provider,
            model=model or "",
            estimated_input_tokens=max(0, int(estimate)),
            max_output_tokens=attrs.get(attr.GEN_AI_REQUEST_MAX_TOKENS),
            operation=operation,
            service_tier=service_tier if isinstance(service_tier, str) else None,
            choices=choices,
        )
        with call.activate():
            preflight.check(planned)
    except BudgetExceeded as exc:
        call.end(error=exc)
        raise
    except Exception:
        _log.debug("tokentrail: a pre-flight check failed (ignored)", exc_info=True)
    return call


# --------------------------------------------------------------------------------------------
# the wrapper templates
# --------------------------------------------------------------------------------------------
class Begun(NamedTuple):
    """What ``begin`` hands the template: the started call, the SDK call's keyword arguments
    (the caller's, or a copy ours amended) and anything ``finish`` needs."""

    call: LLMCall
    kwargs: dict[str, Any]
    context: Any = None


Begin = Callable[[Instruments, Any, tuple, dict], "Begun | None"]
Finish = Callable[[LLMCall, Any, Any], Any]


def _begin(begin: Begin, instruments: Instruments, instance: Any, args: tuple, kwargs: dict) -> Begun | None:
    try:
        return begin(instruments, instance, args, kwargs)
    except BudgetExceeded:
        raise
    except Exception:
        _log.debug("tokentrail: could not read the request; not traced", exc_info=True)
        return None


def _finish(finish: Finish, begun: Begun, result: Any) -> Any:
    try:
        return finish(begun.call, begun.context, result)
    except Exception:
        _log.debug("tokentrail: recording the result failed", exc_info=True)
        begun.call.end()
        return result


def llm_call_wrapper(instruments: Instruments, begin: Begin, finish: Finish, *, is_async: bool = False) -> Callable[..., Any]:
    """The wrapt wrapper of an SDK method that makes one LLM call.

    ``begin(instruments, instance, args, kwargs)`` reads the request and starts the call
    (None: not an LLM call, pass it through); ``finish(call, context, result)`` records the
    result and returns what the caller gets (the result, or a proxy that ends the call).
    """
    if is_async:

        async def async_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
            if not instruments.active or should_skip():
                return await wrapped(*args, **kwargs)
            begun = _begin(begin, instruments, instance, args, kwargs)
            if begun is None:
                return await wrapped(*args, **kwargs)
            result = await begun.call.run_async(wrapped, args, begun.kwargs)
            return _finish(finish, begun, result)

        return async_wrapper

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        if not instruments.active or should_skip():
            return wrapped(*args, **kwargs)
        begun = _begin(begin, instruments, instance, args, kwargs)
        if begun is None:
            return wrapped(*args, **kwargs)
        result = begun.call.run(wrapped, args, begun.kwargs)
        return _finish(finish, begun, result)

    return wrapper


Observe = Callable[[Instruments, Any, tuple, dict, Any], Any]


def result_observer(instruments: Instruments, observe: Observe) -> Callable[[Any, tuple, dict, Any], Any]:
    """``observed(instance, args, kwargs, result)``: ``observe``'s answer, or the result when
    instrumentation is off or suppressed, or should ``observe`` fail."""

    def observed(instance: Any, args: tuple, kwargs: dict, result: Any) -> Any:
        if not instruments.active or should_skip():
            return result
        try:
            return observe(instruments, instance, args, kwargs, result)
        except Exception:
            _log.debug("tokentrail: observing a result failed", exc_info=True)
            return result

    return observed


def result_wrapper(instruments: Instruments, observe: Observe, *, is_async: bool = False) -> Callable[..., Any]:
    """The wrapt wrapper of an SDK method whose result we only look at:
    ``observe(instruments, instance, args, kwargs, result)`` returns what the caller gets (the
    result or a proxy of it); should it fail, the caller gets the result."""
    observed = result_observer(instruments, observe)

    if is_async:

        async def async_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
            return observed(instance, args, kwargs, await wrapped(*args, **kwargs))

        return async_wrapper

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        return observed(instance, args, kwargs, wrapped(*args, **kwargs))

    return wrapper
