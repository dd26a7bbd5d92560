"""Process state in one place: every module-level registry registers its reset here.

``reset()`` returns the process to a fresh start (``InMemoryPipeline`` and the tests use it);
``BoundedSet`` and ``BoundedMemo`` are the one bounded helper for "seen recently" and
"computed once per key" everywhere, so no registry grows without limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_resets: list[Callable[[], None]] = []


def register_reset(fn: Callable[[], None]) -> Callable[[], None]:
    """Register ``fn`` to run on ``reset()``; usable as a decorator. Idempotent."""
    if fn not in _resets:
        _resets.append(fn)
    return fn


def reset() -> None:
    """Forget everything this process remembered (spans, memos, budgets, counters)."""
    for fn in tuple(_resets):
        fn()


class BoundedSet(Generic[K]):
    """A thread-safe insertion-ordered set that forgets its oldest entries past a capacity."""

    __slots__ = ("_items", "_lock", "_capacity")

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, None] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity
        register_reset(self.clear)

    def add(self, key: K) -> bool:
        """Add ``key``; True if it was not there yet."""
        with self._lock:
            if key in self._items:
                return False
            self._items[key] = None
            if len(self._items) > self._capacity:
                self._items.popitem(last=False)
            return True

    def discard(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class BoundedMemo(Generic[K, V]):
    """``get(key, compute)``: compute once per key, remember at most ``capacity`` keys."""

    __slots__ = ("_items", "_lock", "_capacity")

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity
        register_reset(self.clear)

    def get(self, key: K, compute: Callable[[K], V]) -> V:
        try:
            return self._items[key]
        except KeyError:
            pass
        value = compute(key)
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
