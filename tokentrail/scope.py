"""The one shape of tokentrail's scopes (``attribute``, ``task``, ``retry``, ``fallback``).

Each is a ``with`` block, an ``async with`` block and a decorator for sync and async
functions. What one entry must undo is kept per context, so one shared scope object (e.g. a
module-level ``ACME = tokentrail.attribute(tenant="acme")``) can be entered by several threads
or asyncio tasks at once, each undoing its own entry.
"""

from __future__ import annotations

import functools
import inspect
from contextvars import ContextVar
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ENTRIES: ContextVar[tuple] = ContextVar("tokentrail_scopes", default=())


class Scope:
    """Base class: subclasses implement ``__enter__``/``__exit__`` with ``_push``/``_pop`` and
    ``_fresh()`` (a copy for one decorated call, so a decorated function is safe to call
    concurrently and recursively)."""

    __slots__ = ()

    def _push(self, entry: object) -> None:
        _ENTRIES.set(_ENTRIES.get() + ((self, entry),))

    def _pop(self) -> Any:
        """What the innermost entry of this scope in this context pushed, or None."""
        stack = _ENTRIES.get()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] is self:
                _ENTRIES.set(stack[:i] + stack[i + 1:])
                return stack[i][1]
        return None

    def _fresh(self) -> "Scope":
        raise NotImplementedError

    def __enter__(self) -> Any:
        raise NotImplementedError

    def __exit__(self, exc_type, exc, tb) -> None:
        raise NotImplementedError

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
