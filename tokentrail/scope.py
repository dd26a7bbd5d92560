"""The one shape of tokentrail's scopes (``attribute``, ``task``, ``retry``, ``fallback``).

Each is a ``with`` block, an ``async with`` block and a decorator for sync and async
functions. What one entry must undo is kept per context, so one shared scope object (e.g. a
module-level ``ACME = tokentrail.attribute(tenant="acme")``) can be entered by several threads
or asyncio tasks at once, each undoing its own entry.

Leaving a scope gives back exactly what was there before it, even out of order (a ``with``
inside a generator closed after the caller's block, scopes exited by hand): scopes entered
after it and still open are re-applied on top, so no owner is left behind (logged once).
"""

from __future__ import annotations

import functools
import inspect
import logging
from contextvars import ContextVar
from typing import Any, Callable, TypeVar

from tokentrail.state import register_reset

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger(__name__)
_ENTRIES: ContextVar[tuple] = ContextVar("tokentrail_scopes", default=())
_warned: list[bool] = []
register_reset(_warned.clear)


class Scope:
    """Base class: subclasses implement ``__enter__`` (``self._push(self._apply(None))``),
    ``_apply(entry)`` (change the context; what to undo: ``entry`` is the one being re-applied,
    or None), ``_undo(entry, exc)`` and ``_fresh()`` (a copy for one decorated call, so a
    decorated function is safe to call concurrently and recursively)."""

    __slots__ = ()

    def _push(self, entry: object) -> None:
        _ENTRIES.set(_ENTRIES.get() + ((self, entry),))

    def _apply(self, entry: Any) -> Any:
        raise NotImplementedError

    def _undo(self, entry: Any, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _fresh(self) -> "Scope":
        raise NotImplementedError

    def __enter__(self) -> Any:
        raise NotImplementedError

    def __exit__(self, exc_type, exc, tb) -> None:
        stack = _ENTRIES.get()
        i = len(stack) - 1
        if i < 0 or stack[i][0] is not self:  # the usual case, the innermost scope leaving, needs no search
            for i in range(i - 1, -1, -1):
                if stack[i][0] is self:
                    break
            else:
                return  # not entered in this context (or already left)
        _ENTRIES.set(stack[:i])
        later = stack[i + 1:]
        try:
            self._undo(stack[i][1], exc)
        finally:
            if later:  # still open, entered after this one: back on top of what this one gave back
                _out_of_order(self, later)
                for scope, entry in later:
                    scope._push(scope._apply(entry))

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def _out_of_order(scope: Scope, later: tuple) -> None:
    if not _warned:
        _warned.append(True)
        _log.warning("tokentrail: %r was left before %s entered after it (a generator closed late, or "
                     "scopes exited out of order); their owner is kept on top of what was before it",
                     scope, ", ".join(repr(s) for s, _ in later))
