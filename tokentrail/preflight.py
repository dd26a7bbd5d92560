"""The hooks around one LLM call that let breakers stop it before it is paid for.

Instrumentations describe the call they are about to send as a ``PlannedCall`` and run
``check(planned)`` with the call's span current; a registered check may raise
``tokentrail.BudgetExceeded`` (through ``stop``) to stop it unsent, the one exception
tokentrail deliberately lets reach the caller. Once the call is priced,
``tokentrail.tasks.on_llm_call_end`` accounts for it and tells the registered end listeners.
Nothing is registered by importing a module: ``tokentrail.breakers.install()`` does it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from tokentrail import telemetry
from tokentrail.config import env
from tokentrail.errors import BudgetExceeded
from tokentrail.processor.pricing import PRICED, quote
from tokentrail.processor.usage import Usage
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedMemo

_log = logging.getLogger(__name__)

ENV_DEFAULT_OUTPUT = "TOKENTRAIL_BREAKER_DEFAULT_OUTPUT_TOKENS"
DEFAULT_OUTPUT_TOKENS = 16384


@dataclass(frozen=True, slots=True)
class PlannedCall:
    provider: str
    model: str
    estimated_input_tokens: int
    max_output_tokens: int | None
    operation: str = "chat"
    service_tier: str | None = None
    #: Completions generated per request (OpenAI ``n``): each one is billed its own output.
    choices: int = 1


class _Hooks(list):
    """Hooks run in the order they were added; adding one twice keeps one."""

    def add(self, hook: Any) -> None:
        if hook not in self:
            self.append(hook)

    def discard(self, hook: Any) -> None:
        if hook in self:
            self.remove(hook)


# Installed hooks, like the SDK patches: configuration of the process, not remembered state,
# so tokentrail.state.reset() leaves them alone.
_checks = _Hooks()
_end_listeners = _Hooks()
# check -> its cheap "could I act on a call now?" test (none: always)
_applies: dict[Any, Callable[[], bool]] = {}


def register(check: Callable[[PlannedCall], None], applies: Callable[[], bool] | None = None) -> None:
    """Run ``check(planned)`` before every LLM call, after the ones before it. ``applies()``, when
    given, says cheaply whether the check could act now (a budget configured, a task open): when
    no check applies, a call skips the pre-flight (its estimate, its worst-case quote) entirely."""
    _checks.add(check)
    if applies is not None:
        _applies[check] = applies
    else:
        _applies.pop(check, None)


def unregister(check: Callable[[PlannedCall], None]) -> None:
    _checks.discard(check)
    _applies.pop(check, None)


#: ``register_end(listener)``: call ``listener(span, attributes, cost_nano_usd)`` after every LLM call.
register_end, unregister_end = _end_listeners.add, _end_listeners.discard


def armed() -> bool:
    """Whether any registered check could act on a call started now."""
    for registered in _checks:
        applies = _applies.get(registered)
        if applies is None or applies():
            return True
    return False


def check(planned: PlannedCall) -> None:
    """Run every registered check; a check raises to stop the call."""
    for registered in _checks:
        registered(planned)


def call_ended(span: Any, attributes: Mapping[str, Any], nano: int) -> None:
    """Tell the end listeners about a finished call (``nano``: its cost, 0 when unpriced). Never raises."""
    for listener in _end_listeners:
        try:
            listener(span, attributes, nano)
        except Exception:
            _log.debug("tokentrail: an end-of-call listener failed", exc_info=True)


def stop(span: Any, exc: BudgetExceeded) -> None:
    """Stop the call: mark its span, count it on ``tokentrail.budget.blocked``, log, raise ``exc``."""
    try:
        span.set_attribute(attr.TOKENTRAIL_BUDGET_EXCEEDED, exc.limit_name)
        telemetry.budget_blocked().add(1, {attr.TOKENTRAIL_BUDGET_EXCEEDED: exc.limit_name})
        _log.warning("tokentrail: %s", exc)
    except Exception:
        _log.debug("tokentrail: recording a blocked call failed", exc_info=True)
    raise exc


def estimate_tokens(text_chars: int) -> int:
    """A deliberately generous token estimate from a character count (about 3 chars/token)."""
    return text_chars // 3 + 1


def default_output_tokens() -> int:
    try:
        return max(1, int(env(ENV_DEFAULT_OUTPUT, DEFAULT_OUTPUT_TOKENS)))
    except ValueError:
        return DEFAULT_OUTPUT_TOKENS


_QuoteKey = tuple[str, str, "str | None", int, int]
# an agent loop repeats the same model and limits: quote each shape once
_worst_cases: BoundedMemo[_QuoteKey, "int | None"] = BoundedMemo(4096)


def _quote_worst_case(key: _QuoteKey) -> int | None:
    model, provider, service_tier, input_tokens, output_tokens = key
    q = quote(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens), provider=provider,
              service_tier=service_tier)
    return q.total_nano_usd if q.status == PRICED else None


def worst_case_nano(planned: PlannedCall) -> int | None:
    """The most this call can cost (nano-USD), or None when it cannot be priced. Never raises."""
    if not planned.model:
        return None
    output = 0 if planned.operation == "embeddings" else (planned.max_output_tokens or default_output_tokens())
    choices = planned.choices
    if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1:
        output *= choices
    key = (planned.model, planned.provider, planned.service_tier, max(0, planned.estimated_input_tokens), output)
    try:
        return _worst_cases.get(key, _quote_worst_case)
    except Exception:
        _log.debug("tokentrail: worst-case estimate failed", exc_info=True)
        return None
