"""Living with other GenAI instrumentations: which SDKs we patch, and the call context.

Ours wins by default: our span is the LLM span of the call. Under ``opentelemetry-instrument``,
``settle()`` (the post-instrument hook) uninstruments the other GenAI instrumentors of an SDK
ours patches; whatever remains (an SDK's own telemetry, a manual set-up, a wrapper an
``uninstrument`` leaves behind) is dropped at export (``tokentrail.processor.dedup``).
``TOKENTRAIL_COEXISTENCE=defer`` leaves the SDKs to the other instrumentation; our processor
then prices and attributes their spans.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Iterator

from opentelemetry.util._importlib_metadata import entry_points

from tokentrail.processor import exactness
from tokentrail.semconv import attributes as attr

_log = logging.getLogger(__name__)

ENV = "TOKENTRAIL_COEXISTENCE"
DEFER = "defer"  # leave the SDKs to the other instrumentation; we only price and attribute

# OpenLLMetry's context key: its wrappers create no span while it is set (semconv_ai).
TRACELOOP_SUPPRESS_KEY = "suppress_language_model_instrumentation"

_OURS = "tokentrail"
# Other instrumentors' dependency names that are the SDK one of ours patches.
_SAME_SDK = {"boto3": "botocore"}
# Instrumentations of a whole library, not only its model calls (botocore: every AWS service):
# never uninstrumented; their spans of our calls are dropped at export.
_WHOLE_LIBRARY = frozenset({"opentelemetry.instrumentation.botocore"})


def deferring() -> bool:
    return os.environ.get(ENV, "").strip().lower() == DEFER


def should_instrument(provider: str) -> bool:
    """Whether our instrumentor patches ``provider``'s SDK (False only when the user defers)."""
    return not deferring()


#: What our wrapped SDK call's context holds beside its span: OpenLLMetry makes no duplicate
#: span inside it. (key, value) pairs, so the call's context is built in one copy.
CALL_CONTEXT_VALUES: tuple[tuple[str, object], ...] = ((TRACELOOP_SUPPRESS_KEY, True),)


def _sdk_names(instrumentor: Any) -> set[str]:
    from packaging.requirements import Requirement

    names = set()
    for requirement in instrumentor.instrumentation_dependencies() or ():
        name = Requirement(requirement).name.lower().replace("_", "-")
        names.add(_SAME_SDK.get(name, name))
    return names


def _instrumented() -> Iterator[tuple[str, Any]]:
    """(entry point value, instance) of every instrumentor that is instrumented now. Only
    modules already imported are looked at: an instrumentor never loaded instruments nothing."""
    seen = set()
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        module = sys.modules.get(entry_point.module)
        cls = getattr(module, entry_point.attr, None) if module is not None else None
        instance = vars(cls).get("_instance") if isinstance(cls, type) else None
        if instance is None or id(instance) in seen or not getattr(instance, "_is_instrumented_by_opentelemetry", False):
            continue
        seen.add(id(instance))
        yield entry_point.value, instance


def settle() -> list[str]:
    """After every instrumentor ran: one instrumentation per SDK call. Uninstruments the other
    GenAI instrumentors of each SDK a tokentrail instrumentor patches, or, deferring, warns when
    two others share an SDK (nothing can tell their spans of one call apart). Returns what it
    uninstrumented (entry point values); never raises."""
    removed: list[str] = []
    try:
        ours: list[tuple[Any, set[str]]] = []
        others: list[tuple[str, Any, set[str]]] = []
        for value, instance in _instrumented():
            try:
                sdks = _sdk_names(instance)
            except Exception:
                continue
            if value.startswith(_OURS):
                if getattr(instance, "_patches", None):
                    ours.append((instance, sdks))
            elif value.partition(":")[0] not in _WHOLE_LIBRARY:
                others.append((value, instance, sdks))
        if deferring():
            _warn_shared(others)
            return removed
        for instance, sdks in ours:
            theirs = [(value, other) for value, other, their_sdks in others if their_sdks & sdks]
            if theirs:
                removed += _take_over(instance, theirs)
        if removed:
            _log.info("tokentrail: tokentrail instruments these SDKs; uninstrumented %s", ", ".join(removed))
    except Exception:
        _log.debug("tokentrail: coexistence settle failed", exc_info=True)
    return removed


def _take_over(ours: Any, theirs: list[tuple[str, Any]]) -> list[str]:
    """Uninstrument ``theirs``, ours first: an ``uninstrument`` unwraps whatever wrapper is
    outermost, which is ours when ours was patched last. Ours is then patched again."""
    removed = []
    ours.uninstrument()
    try:
        for value, instance in theirs:
            try:
                instance.uninstrument()
                removed.append(value)
            except Exception:  # a wrapper left behind: its spans are still dropped at export
                _log.debug("tokentrail: could not uninstrument %s", value, exc_info=True)
    finally:
        ours.instrument(skip_dep_check=True)
    return removed


def _warn_shared(others: list[tuple[str, Any, set[str]]]) -> None:
    by_sdk: dict[str, list[str]] = {}
    for value, _instance, sdks in others:
        for sdk in sdks:
            by_sdk.setdefault(sdk, []).append(value)
    shared = [(sdk, values) for sdk, values in sorted(by_sdk.items()) if len(values) > 1]
    if not shared:
        return
    mark = exactness.note(exactness.DEFER_SHARED_SDK, ",".join(sdk for sdk, _ in shared))
    for sdk, values in shared:
        _log.warning(
            "tokentrail: TOKENTRAIL_COEXISTENCE=defer and %d instrumentations of %s (%s): each call may be "
            "counted %d times; LLM spans are marked %s=%s. Fix: unset TOKENTRAIL_COEXISTENCE (tokentrail then "
            "keeps one span per call), or keep one of them (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, or pip "
            "uninstall the others).",
            len(values), sdk, ", ".join(values), len(values), attr.TOKENTRAIL_UNVERIFIED, mark)
