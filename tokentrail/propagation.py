"""Carrying the trace and its owner across hops, and trusting it only when it is ours.

* ``inject(headers)`` / ``extract(headers)``: W3C ``traceparent`` + ``baggage`` for any
  message broker's headers (str or bytes keys/values).
* ``wrap(fn)``: run ``fn`` in the caller's context on another thread (a plain
  ``threading.Thread`` starts with an empty context; ``ThreadPoolExecutor.submit`` too).
* ``environ()`` / ``attach_from_environ()``: ``TRACEPARENT`` / ``BAGGAGE`` for a subprocess.

Trust at the boundary: tokentrail mirrors the owner and task into baggage. Inbound
attribution (baggage that arrived from another process, i.e. not set by ``attribute()`` or
``task()`` here) is accepted only if

* ``TOKENTRAIL_BAGGAGE_SECRET`` is set and the HMAC-SHA256 signature the sender put in the
  ``tokentrail.sig`` baggage entry verifies over the values, or
* no secret is set and ``TOKENTRAIL_TRUST_INBOUND_BAGGAGE=true`` (then every value is still
  validated and at most ``TOKENTRAIL_MAX_INBOUND_TENANTS`` distinct tenants are accepted, so a
  flood of made-up tenant ids cannot explode cardinality).

Anything else is ignored, counted on ``tokentrail.attribution.rejected`` and marked on the
span with ``tokentrail.attribution.rejection``. A signature binds the values, not the request:
a captured header can be replayed with its own values, never altered.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, MutableMapping, TypeVar

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

from tokentrail.attribution import IDENTITY_KEYS, is_valid_value
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names

_log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

ENV_SECRET = "TOKENTRAIL_BAGGAGE_SECRET"
ENV_TRUST = "TOKENTRAIL_TRUST_INBOUND_BAGGAGE"
ENV_MAX_INBOUND_TENANTS = "TOKENTRAIL_MAX_INBOUND_TENANTS"
DEFAULT_MAX_INBOUND_TENANTS = 1000

#: Baggage entry holding the HMAC over the identity entries.
SIGNATURE_KEY = "tokentrail.sig"

# rejection reasons (values of tokentrail.attribution.rejection)
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
INVALID_VALUE = "invalid_value"
CARDINALITY = "cardinality"

_BAGGAGE = W3CBaggagePropagator()


# --------------------------------------------------------------------------------------------
# signing
# --------------------------------------------------------------------------------------------
def _secret() -> bytes | None:
    raw = os.environ.get(ENV_SECRET)
    return raw.encode() if raw else None


def _trust_unsigned() -> bool:
    return os.environ.get(ENV_TRUST, "").strip().lower() in ("true", "1", "yes")


def _canonical(identity: Mapping[str, str]) -> bytes:
    return "\n".join(f"{k}={identity[k]}" for k in sorted(identity)).encode()


def sign(identity: Mapping[str, str], secret: bytes) -> str:
    """The signature of an identity: base64url HMAC-SHA256 (128 bits) over its sorted entries."""
    digest = hmac.new(secret, _canonical(identity), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def baggage_with_identity(ctx: Context, identity: Mapping[str, str]) -> Context:
    """``ctx`` with our baggage entries replaced by ``identity`` (signed when a secret is set)."""
    for key in (*IDENTITY_KEYS, SIGNATURE_KEY):
        if baggage.get_baggage(key, ctx) is not None:
            ctx = baggage.remove_baggage(key, ctx)
    for key, value in identity.items():
        ctx = baggage.set_baggage(key, value, ctx)
    secret = _secret()
    if secret and identity:
        ctx = baggage.set_baggage(SIGNATURE_KEY, sign(identity, secret), ctx)
    return ctx


# --------------------------------------------------------------------------------------------
# the trust boundary
# --------------------------------------------------------------------------------------------
_EMPTY: Mapping[str, str] = {}
_lock = threading.Lock()
_accepted_tenants: set[str] = set()
_counted: OrderedDict[tuple, None] = OrderedDict()
_COUNTED_MAX = 4096


@functools.lru_cache(maxsize=2048)
def _verify(entries: tuple[tuple[str, str], ...], signature: str | None, secret: bytes | None,
            trust_unsigned: bool) -> tuple[Mapping[str, str], str | None]:
    identity = dict(entries)
    if secret:
        if not signature:
            return _EMPTY, UNSIGNED
        if not hmac.compare_digest(sign(identity, secret), signature):
            return _EMPTY, BAD_SIGNATURE
        if not all(is_valid_value(v) for v in identity.values()):
            return _EMPTY, INVALID_VALUE
        return identity, None
    if not trust_unsigned:
        return _EMPTY, UNSIGNED
    valid = {k: v for k, v in identity.items() if is_valid_value(v)}
    return valid, (INVALID_VALUE if len(valid) != len(identity) else None)


def _max_inbound_tenants() -> int:
    try:
        return max(0, int(os.environ.get(ENV_MAX_INBOUND_TENANTS, DEFAULT_MAX_INBOUND_TENANTS)))
    except ValueError:
        return DEFAULT_MAX_INBOUND_TENANTS


def _admit_tenant(tenant: str) -> bool:
    """Unsigned trust mode: accept at most N distinct inbound tenants per process."""
    if tenant in _accepted_tenants:
        return True
    with _lock:
        if len(_accepted_tenants) >= _max_inbound_tenants():
            return False
        _accepted_tenants.add(tenant)
        return True


def inbound_identity(ctx: Context | None = None) -> tuple[Mapping[str, str], str | None]:
    """(trusted identity, rejection reason) from the baggage of a context extracted from outside."""
    entries = baggage.get_all(ctx)
    if not entries:
        return _EMPTY, None
    found = tuple((k, str(entries[k])) for k in IDENTITY_KEYS if k in entries)
    if not found:
        return _EMPTY, None
    signature = entries.get(SIGNATURE_KEY)
    secret = _secret()
    identity, reason = _verify(found, signature if isinstance(signature, str) else None, secret,
                               _trust_unsigned())
    if reason is None and not secret:
        tenant = identity.get(attr.TOKENTRAIL_TENANT)
        if tenant is not None and not _admit_tenant(tenant):
            identity, reason = {k: v for k, v in identity.items() if k != attr.TOKENTRAIL_TENANT}, CARDINALITY
    if reason is not None:
        _count_rejection(reason, found, ctx)
    return identity, reason


def _count_rejection(reason: str, found: tuple, ctx: Context | None) -> None:
    """Count one rejection per inbound context (trace + values), not once per span that sees it."""
    try:
        span_ctx = trace.get_current_span(ctx).get_span_context()
        key = (span_ctx.trace_id, reason, found)
        with _lock:
            if key in _counted:
                return
            _counted[key] = None
            if len(_counted) > _COUNTED_MAX:
                _counted.popitem(last=False)
        _rejected_counter().add(1, {attr.TOKENTRAIL_ATTRIBUTION_REJECTION: reason})
        _log.debug("tokentrail: inbound attribution ignored (%s)", reason)
    except Exception:
        _log.debug("tokentrail: counting a rejection failed", exc_info=True)


def _rejected_counter() -> Any:
    from tokentrail.tasks import instrument  # late: tasks imports attribution, which imports us

    return instrument("counter", names.TOKENTRAIL_ATTRIBUTION_REJECTED, "{value}",
                      "Inbound baggage attribution ignored at the trust boundary")


def reset_trust_state() -> None:
    """Forget admitted tenants and counted rejections (tests, or after a secret rotation)."""
    with _lock:
        _accepted_tenants.clear()
        _counted.clear()
    _verify.cache_clear()


# --------------------------------------------------------------------------------------------
# carriers
# --------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> MutableMapping[str, Any]:
    """Write ``traceparent`` (+ ``tracestate``) and ``baggage`` for the current context into
    ``headers`` (a dict of message headers) and return it. Never raises."""
    try:
        propagate.inject(headers, context=context)
        if "baggage" not in headers:  # the configured propagators may leave baggage out
            _BAGGAGE.inject(headers, context=context)
    except Exception:
        _log.debug("tokentrail: inject failed", exc_info=True)
    return headers


def extract(headers: Mapping[Any, Any] | None) -> Context:
    """The context carried by message ``headers`` (str or bytes keys/values, any case).

    Attach it (``with tokentrail.propagation.attached(ctx):``) around the consumer's work;
    inbound attribution in it is trusted only as the module docstring says.
    """
    try:
        carrier = {_text(k).lower(): _text(v) for k, v in (headers or {}).items()}
        ctx = propagate.extract(carrier)
        if "baggage" in carrier and not baggage.get_all(ctx):
            ctx = _BAGGAGE.extract(carrier, context=ctx)
        return ctx
    except Exception:
        _log.debug("tokentrail: extract failed", exc_info=True)
        return Context()


@contextmanager
def attached(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` current for the block."""
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)


@contextmanager
def consuming(headers: Mapping[Any, Any] | None) -> Iterator[Context]:
    """``with consuming(message.headers):`` = attach ``extract(headers)`` for the block."""
    with attached(extract(headers)) as ctx:
        yield ctx


# --------------------------------------------------------------------------------------------
# threads and subprocesses
# --------------------------------------------------------------------------------------------
def wrap(fn: F) -> F:
    """Bind ``fn`` to the current context, for ``threading.Thread(target=wrap(fn))`` or an
    executor: the owner, the task and the parent span follow it into the other thread."""
    ctx = otel_context.get_current()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return bound  # type: ignore[return-value]


def environ(context: Context | None = None) -> dict[str, str]:
    """``{"TRACEPARENT": ..., "BAGGAGE": ...}`` for a child process's environment."""
    carrier: dict[str, str] = {}
    inject(carrier, context)
    return {k.upper(): v for k, v in carrier.items() if k in ("traceparent", "tracestate", "baggage")}


def from_environ(env: Mapping[str, str] | None = None) -> Context:
    env = os.environ if env is None else env
    return extract({k.lower(): v for k, v in env.items() if k in ("TRACEPARENT", "TRACESTATE", "BAGGAGE")})


def attach_from_environ(env: Mapping[str, str] | None = None) -> object | None:
    """In a child process: make the parent's context (``TRACEPARENT``/``BAGGAGE``) current.

    Returns the attach token, or None when the environment carries no context.
    """
    source = os.environ if env is None else env
    if "TRACEPARENT" not in source and "BAGGAGE" not in source:
        return None
    return otel_context.attach(from_environ(source))


__all__ = [
    "inject",
    "extract",
    "attached",
    "consuming",
    "wrap",
    "environ",
    "from_environ",
    "attach_from_environ",
    "sign",
    "inbound_identity",
    "reset_trust_state",
    "SIGNATURE_KEY",
]
