"""Stream proxies shared by every provider instrumentation.

A provider SDK returns a stream object (openai ``Stream``/``AsyncStream``, anthropic
``Stream``, a botocore ``EventStream``, a plain generator, ...). We hand the caller a
``wrapt.ObjectProxy`` around it, so ``isinstance`` checks, attributes (``.response``, ...)
and methods keep working, while every item passes through ``StreamHooks.on_item`` and
``StreamHooks.on_end`` is called **exactly once**, whichever way the stream finishes:

- exhausted (``StopIteration``/``StopAsyncIteration``): ``on_end(None)``
- an exception mid-stream: ``on_end(exc)``, then the exception reaches the caller unchanged
- ``close()`` or leaving ``with``: ``on_end(None)``
- abandoned and garbage collected: ``on_end(None)`` from ``__del__``

``on_item`` returns True to hide an item from the caller (e.g. the usage-only chunk that
the instrumentation asked for and the caller did not). Keep it tiny: it runs per chunk.

Closing never reads from the stream (a stalled server must not hold the caller's ``close()``):
the call ends with what the caller read.

Providers describe what they fold from their stream as a ``StreamState`` (``add`` per item;
``response``, ``usage``, ``output_messages``, ``error`` at the end); ``StateStreamHooks``
moves it onto the LLM call and ends the call.
"""

from __future__ import annotations

import logging
from typing import Any

import wrapt

from tokentrail.semconv import attributes as attr

_log = logging.getLogger(__name__)


class StreamHooks:
    """Per-stream observer a provider instrumentation subclasses."""

    __slots__ = ()

    def on_item(self, item: Any) -> bool:
        """Observe one item; return True to hide it from the caller."""
        return False

    def on_end(self, error: BaseException | None) -> None:
        """The stream is finished (exhausted, failed, closed or abandoned). Called once."""


def _finish(proxy: Any, error: BaseException | None) -> None:
    if proxy._self_done:
        return
    proxy._self_done = True
    try:
        proxy._self_hooks.on_end(error)
    except Exception:
        _log.debug("tokentrail: stream on_end failed", exc_info=True)


def _bind_next(wrapped: Any) -> Any:
    """The wrapped stream's own ``__next__`` (or its iterator's), bound once.

    Binding is lazy-safe: for SDK streams and generators it performs no I/O. Anything not
    iterable gets a callable that raises the same TypeError the caller would have seen.
    """
    if hasattr(type(wrapped), "__next__"):
        return wrapped.__next__
    try:
        return iter(wrapped).__next__
    except TypeError as exc:
        error = exc

        def raising() -> Any:
            raise error

        return raising


def _bind_anext(wrapped: Any) -> Any:
    if hasattr(type(wrapped), "__anext__"):
        return wrapped.__anext__
    try:
        return wrapped.__aiter__().__anext__
    except (AttributeError, TypeError) as exc:
        error = TypeError(str(exc))

        async def raising() -> Any:
            raise error

        return raising


class _StreamProxy(wrapt.ObjectProxy):
    """What the sync and async proxies share: the hooks, the bound next, the end at GC."""

    _bind = staticmethod(_bind_next)

    def __init__(self, wrapped: Any, hooks: StreamHooks) -> None:
        super().__init__(wrapped)
        self._self_hooks = hooks
        self._self_on_item = hooks.on_item
        self._self_done = False
        self._self_next = self._bind(wrapped)

    def __del__(self) -> None:
        try:
            if not self._self_done:
                _finish(self, None)
        except Exception:  # interpreter shutdown or half-built proxy
            pass


class SyncStreamProxy(_StreamProxy):
    """Iterator/context-manager proxy for a synchronous SDK stream."""

    def __iter__(self) -> "SyncStreamProxy":
        return self

    def __next__(self) -> Any:
        # The per-chunk path: two attribute reads, one call into the hooks. A loop, not a
        # recursion: any number of hidden items in a row.
        while True:
            try:
                item = self._self_next()
            except StopIteration:
                _finish(self, None)
                raise
            except BaseException as exc:
                _finish(self, exc)
                raise
            try:
                if not self._self_on_item(item):
                    return item
            except Exception:
                _log.debug("tokentrail: stream on_item failed", exc_info=True)
                return item

    def close(self) -> Any:
        try:
            closer = getattr(self.__wrapped__, "close", None)
            return closer() if closer is not None else None
        finally:
            _finish(self, None)

    def __enter__(self) -> "SyncStreamProxy":
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__exit__", None)
            if exit_ is not None:
                return exit_(exc_type, exc, tb)
            closer = getattr(self.__wrapped__, "close", None)
            if closer is not None:
                closer()
            return None
        finally:
            _finish(self, None)


class AsyncStreamProxy(_StreamProxy):
    """Async iterator/context-manager proxy for an asynchronous SDK stream."""

    _bind = staticmethod(_bind_anext)

    def __aiter__(self) -> "AsyncStreamProxy":
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self._self_next()
            except StopAsyncIteration:
                _finish(self, None)
                raise
            except BaseException as exc:
                _finish(self, exc)
                raise
            try:
                if not self._self_on_item(item):
                    return item
            except Exception:
                _log.debug("tokentrail: stream on_item failed", exc_info=True)
                return item

    async def close(self) -> Any:
        try:
            closer = getattr(self.__wrapped__, "close", None) or getattr(self.__wrapped__, "aclose", None)
            result = closer() if closer is not None else None
            if hasattr(result, "__await__"):
                result = await result
            return result
        finally:
            _finish(self, None)

    async def aclose(self) -> Any:
        """For async generators wrapped directly (they have aclose, not close)."""
        try:
            closer = getattr(self.__wrapped__, "aclose", None) or self.__wrapped__.close
            result = closer()
            if hasattr(result, "__await__"):
                result = await result
            return result
        finally:
            _finish(self, None)

    async def __aenter__(self) -> "AsyncStreamProxy":
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__aexit__", None)
            if exit_ is not None:
                return await exit_(exc_type, exc, tb)
            return None
        finally:
            _finish(self, None)


class StreamState:
    """What a provider folds from its stream: the one interface ``StateStreamHooks`` drives.

    ``add`` sees every item (keep it tiny: it runs per chunk; a true return hides the item from
    the caller); the rest is asked once, when the stream ends.
    """

    __slots__ = ()

    def add(self, item: Any) -> Any:
        return None

    def response(self) -> dict[str, Any]:
        """``LLMCall.set_response`` keyword arguments."""
        return {}

    def usage(self) -> Any:
        """The call's ``Usage`` (None when the stream carried none); raises ``InvalidUsage``."""
        return None

    def output_messages(self) -> Any:
        """The answer as GenAI messages, asked only when content capture is on."""
        return None

    def error(self) -> str | None:
        """An error the stream reported in an item rather than by raising."""
        return None

    def partial(self) -> bool:
        """True when the usage is what the stream reported before it was cut (not its final count)."""
        return False


class StateStreamHooks(StreamHooks):
    """Ends a ``genai_span.LLMCall`` when its stream finishes, with what the ``StreamState`` folded."""

    __slots__ = ("call", "state", "on_item")

    def __init__(self, call: Any, state: StreamState) -> None:
        self.call = call
        self.state = state
        self.on_item = state.add  # the proxies call it directly: no hop per chunk

    def on_end(self, error: BaseException | None) -> None:
        if self.call.ended:
            return
        try:
            self.record()
        except Exception:
            _log.debug("tokentrail: recording stream results failed", exc_info=True)
        self.call.end(error=error)

    def record(self) -> None:
        call, state = self.call, self.state
        call.set_response(**state.response())
        call.read_usage(state.usage)
        if call.usage is not None and state.partial():
            call.set(attr.TOKENTRAIL_USAGE_PARTIAL, True)
        if call.capture_content:
            call.capture_messages(output_messages=state.output_messages())
        error = state.error()
        if error:
            call.set_error(error)
