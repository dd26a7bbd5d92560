"""The trust boundary: tokentrail's identity in W3C baggage, signed, and believed only when trusted.

tokentrail mirrors the owner and task into baggage. Inbound attribution (baggage that arrived
from another process, i.e. not set by ``attribute()`` or ``task()`` here) is accepted only if

* ``TOKENTRAIL_BAGGAGE_SECRET`` is set and the HMAC-SHA256 signature the sender put in the
  ``tokentrail.sig`` baggage entry verifies over the values, or
* no secret is set and ``TOKENTRAIL_TRUST_INBOUND_BAGGAGE=true``. Then every value is still
  validated and every owner dimension is capped, so a flood of made-up ids cannot explode
  cardinality: at most ``TOKENTRAIL_MAX_INBOUND_TENANTS`` distinct tenants and
  ``TOKENTRAIL_MAX_INBOUND_VALUES`` distinct features, teams and users each, first come first
  served for the life of the process; the tenants in ``TOKENTRAIL_KNOWN_TENANTS`` (comma
  separated) are always accepted and take no room under the cap. A capped field alone is dropped.

Anything else is ignored, counted on ``tokentrail.attribution.rejected`` and marked on the
span with ``tokentrail.attribution.rejection``. A baggage header over the W3C limit (8 KB) is
dropped by the OpenTelemetry propagator before anyone sees it; ``BaggageLogGuard`` (installed
with the breakers) counts it as ``oversized`` and shortens the propagator's log line, which
would otherwise carry the whole header. A signature binds the values, not the request:
a captured header can be replayed with its own values, never altered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
from typing import Mapping

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from tokentrail import telemetry
from tokentrail.config import env
from tokentrail.identity import IDENTITY_KEYS, OWNER_FIELDS, is_valid_value
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedMemo, BoundedSet, register_reset

_log = logging.getLogger(__name__)

ENV_SECRET = "TOKENTRAIL_BAGGAGE_SECRET"
ENV_TRUST = "TOKENTRAIL_TRUST_INBOUND_BAGGAGE"
ENV_MAX_INBOUND_TENANTS = "TOKENTRAIL_MAX_INBOUND_TENANTS"
DEFAULT_MAX_INBOUND_TENANTS = 1000
ENV_MAX_INBOUND_VALUES = "TOKENTRAIL_MAX_INBOUND_VALUES"
DEFAULT_MAX_INBOUND_VALUES = 1000
ENV_KNOWN_TENANTS = "TOKENTRAIL_KNOWN_TENANTS"

#: Baggage entry holding the HMAC over the identity entries.
SIGNATURE_KEY = "tokentrail.sig"

# rejection reasons (values of tokentrail.attribution.rejection)
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
INVALID_VALUE = "invalid_value"
CARDINALITY = "cardinality"
OVERSIZED = "oversized"

_EMPTY: Mapping[str, str] = {}


def _secret() -> bytes | None:
    raw = env(ENV_SECRET)
    return raw.encode() if raw else None


def _trust_unsigned() -> bool:
    return (env(ENV_TRUST) or "").strip().lower() in ("true", "1", "yes")


def _canonical(identity: Mapping[str, str]) -> bytes:
    return "\n".join(f"{k}={identity[k]}" for k in sorted(identity)).encode()


def sign(identity: Mapping[str, str], secret: bytes) -> str:
    """The signature of an identity: base64url HMAC-SHA256 (128 bits) over its sorted entries."""
    digest = hmac.new(secret, _canonical(identity), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def baggage_with_identity(ctx: Context, identity: Mapping[str, str]) -> Context:
    """``ctx`` with our baggage entries replaced by ``identity`` (signed when a secret is set)."""
    entries = identity_baggage(ctx, identity)
    return ctx if entries is None else otel_context.set_value(BAGGAGE_KEY, entries, ctx)


def identity_baggage(ctx: Context | None, identity: Mapping[str, str]) -> dict[str, object] | None:
    """The baggage entries of ``baggage_with_identity(ctx, identity)`` (None: ``ctx``'s, unchanged).

    One pass, one new dict: the same entries in the same order as removing ours one by one
    and setting the new ones one by one would leave (an entry of ours holding None, which
    ``get_baggage`` cannot tell from absent, was never removed: it keeps its place).
    """
    current = baggage_entries(ctx)
    entries = {k: v for k, v in current.items() if k not in _OURS or v is None} if current else {}
    if not identity and len(entries) == len(current):
        return None  # nothing of ours to drop, nothing to add
    entries.update(identity)
    secret = _secret()
    if secret and identity:
        entries[SIGNATURE_KEY] = sign(identity, secret)
    return entries


def baggage_entries(ctx: Context | None) -> dict[str, object]:
    """The baggage of ``ctx`` (the current context for None) as ``baggage.get_all`` reads it, the
    context's own dict (not to be changed) rather than a read-only copy: empty when it has none."""
    entries = (ctx if ctx is not None else otel_context.get_current()).get(BAGGAGE_KEY)
    return entries if isinstance(entries, dict) else _EMPTY_DICT


#: The context key baggage lives under, found through the public API.
BAGGAGE_KEY = next(iter(baggage.clear(Context())))
_OURS = frozenset((*IDENTITY_KEYS, SIGNATURE_KEY))
_EMPTY_DICT: dict[str, object] = {}


_VerifyKey = tuple[tuple[tuple[str, str], ...], "str | None", "bytes | None", bool]
# an inbound context is looked at by every span started in it: verify each value set once
_verified: BoundedMemo[_VerifyKey, tuple[Mapping[str, str], str | None]] = BoundedMemo(2048)
# one rejection is counted per inbound trace and value set, not once per span that sees it
_counted: BoundedSet[tuple] = BoundedSet(4096)

_admitted_lock = threading.Lock()
# per owner dimension, the inbound values admitted in unsigned trust mode; not bounded by
# eviction: the cap is the point (eviction would let a flood churn through the labels)
_admitted: dict[str, set[str]] = {key: set() for key in OWNER_FIELDS.values()}
_known: BoundedMemo[str, frozenset[str]] = BoundedMemo(4)


@register_reset
def _forget_admitted() -> None:
    with _admitted_lock:
        for values in _admitted.values():
            values.clear()


def _verify(key: _VerifyKey) -> tuple[Mapping[str, str], str | None]:
    entries, signature, secret, trust_unsigned = key
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


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


def _known_tenants() -> frozenset[str]:
    raw = os.environ.get(ENV_KNOWN_TENANTS) or ""
    return _known.get(raw, lambda text: frozenset(t.strip() for t in text.split(",") if is_valid_value(t.strip())))


def _admit(key: str, value: str) -> bool:
    """Unsigned trust mode: accept at most N distinct inbound values of an owner dimension."""
    admitted = _admitted.get(key)
    if admitted is None or value in admitted:
        return True
    if key == _TENANT:
        if value in _known_tenants():
            return True
        cap = _env_int(ENV_MAX_INBOUND_TENANTS, DEFAULT_MAX_INBOUND_TENANTS)
    else:
        cap = _env_int(ENV_MAX_INBOUND_VALUES, DEFAULT_MAX_INBOUND_VALUES)
    with _admitted_lock:
        if len(admitted) >= cap:
            return False
        admitted.add(value)
        return True


def inbound_identity(ctx: Context | None = None) -> tuple[Mapping[str, str], str | None]:
    """(trusted identity, rejection reason or None) from the baggage of a context from outside."""
    entries = baggage_entries(ctx)
    if not entries:  # the common case
        return _EMPTY, None
    found = tuple((k, str(entries[k])) for k in IDENTITY_KEYS if k in entries)
    if not found:
        return _EMPTY, None
    signature = entries.get(SIGNATURE_KEY)
    secret = _secret()
    key = (found, signature if isinstance(signature, str) else None, secret, _trust_unsigned())
    identity, reason = _verified.get(key, _verify)
    if reason is None and not secret:
        capped = [k for k, v in identity.items() if not _admit(k, v)]
        if capped:
            identity, reason = {k: v for k, v in identity.items() if k not in capped}, CARDINALITY
    if reason is not None:
        _count_rejection(reason, found, ctx)
    return identity, reason


def _count_rejection(reason: str, found: tuple, ctx: Context | None) -> None:
    try:
        trace_id = trace.get_current_span(ctx).get_span_context().trace_id
        if _counted.add((trace_id, reason, found)):
            telemetry.attribution_rejected().add(1, {attr.TOKENTRAIL_ATTRIBUTION_REJECTION: reason})
            _log.debug("tokentrail: inbound attribution ignored (%s)", reason)
    except Exception:
        _log.debug("tokentrail: counting a rejection failed", exc_info=True)


class BaggageLogGuard(logging.Filter):
    """On the propagator's logger: counts dropped oversized headers, keeps its lines short."""

    LOGGER = "opentelemetry.baggage.propagation"
    MAX_SHOWN = 64

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            args = record.args if isinstance(record.args, tuple) else ()
            if len(args) == 1 and isinstance(args[0], str) and len(args[0]) > self.MAX_SHOWN:
                if "exceeded the maximum" in str(record.msg):
                    telemetry.attribution_rejected().add(1, {attr.TOKENTRAIL_ATTRIBUTION_REJECTION: OVERSIZED})
                record.args = (f"{args[0][:self.MAX_SHOWN]}... ({len(args[0])} characters)",)
        except Exception:  # a log filter must never lose the line
            pass
        return True


_guard = BaggageLogGuard()


def install_baggage_guard() -> None:
    logging.getLogger(BaggageLogGuard.LOGGER).addFilter(_guard)  # idempotent: a filter is added once


def uninstall_baggage_guard() -> None:
    logging.getLogger(BaggageLogGuard.LOGGER).removeFilter(_guard)


_TENANT = attr.TOKENTRAIL_TENANT
