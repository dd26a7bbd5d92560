"""The one instrumentor shape: a table of patch targets, one instruments object, exact undo.

A provider's instrumentor is a small ``TokentrailInstrumentor`` subclass: its dependencies,
its tracer name, its coexistence name and its ``targets``. ``instrument()`` patches each
target with ``factory(instruments)`` and remembers what it replaced; ``uninstrument()`` puts
back exactly those objects and switches the instruments off, so a wrapper bound earlier (the
SDKs cache some) passes calls straight through.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Callable, Mapping, NamedTuple

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from tokentrail import breakers
from tokentrail.instrumentation import coexistence
from tokentrail.processor.pricing import card as rate_card

_log = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_MISSING = object()


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in ("false", "0", "no", "off")


def _content_capture_asked() -> bool:
    """Only an explicit yes records message content (an unclear value means no)."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("true", "1", "yes")


class Instruments:
    """What every wrapper of one instrumentor shares: the tracer, the providers it was given
    (the metrics fallback records to that meter provider) and the switches read at instrument
    time. ``active`` is cleared on uninstrument."""

    __slots__ = ("tracer", "tracer_provider", "meter_provider", "active", "capture_content", "switches")

    def __init__(self, tracer: Any, *, tracer_provider: Any = None, meter_provider: Any = None,
                 capture_content: bool = False, switches: Mapping[str, bool] | None = None) -> None:
        self.tracer = tracer
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.active = True
        # Message content is recorded only when the user explicitly asks for it.
        self.capture_content = capture_content
        self.switches = dict(switches or {})


class Target(NamedTuple):
    """One thing to patch: ``path`` ("Class.method" or "function") in ``module`` (the first of
    several module names that imports), replaced by ``factory(instruments)``, a wrapt wrapper.
    ``optional``: absent from some SDK versions, skipped at debug level. ``plain``:
    ``factory(instruments)(original)`` is the replacement itself, a plain function, for a method
    every call goes through where a wrapt wrapper's own cost would be most of the work."""

    module: str | tuple[str, ...]
    path: str
    factory: Callable[[Instruments], Callable[..., Any]]
    optional: bool = False
    plain: bool = False


def sync_and_async(module: str | tuple[str, ...], sync_path: str, async_path: str,
                   factory: Callable[..., Callable[[Instruments], Any]], *, optional: bool = False,
                   plain: bool = False) -> tuple[Target, Target]:
    """A method and its async twin: ``factory(is_async=...)`` gives each its wrapper factory."""
    return (Target(module, sync_path, factory(is_async=False), optional, plain),
            Target(module, async_path, factory(is_async=True), optional, plain))


class _Patch(NamedTuple):
    owner: Any
    name: str
    original: Any  # what owner.__dict__ held, or _MISSING when the attribute was inherited
    installed: Any


def _import(module: str | tuple[str, ...]) -> Any:
    names = (module,) if isinstance(module, str) else module
    for name in names[:-1]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return importlib.import_module(names[-1])


def _patch(target: Target, instruments: Instruments) -> _Patch:
    owner = _import(target.module)
    *parents, name = target.path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = vars(owner).get(name, _MISSING)
    if original is _MISSING:
        getattr(owner, name)  # an AttributeError for a method this SDK version lacks
    if target.plain:
        setattr(owner, name, target.factory(instruments)(getattr(owner, name)))
    else:
        wrapt.wrap_function_wrapper(owner, name, target.factory(instruments))
    return _Patch(owner, name, original, vars(owner)[name])


def _restore(patch: _Patch) -> None:
    if vars(patch.owner).get(patch.name) is not patch.installed:
        # Another instrumentation wrapped ours since: leave its wrapper, ours passes through.
        _log.debug("tokentrail: %r.%s was re-wrapped; leaving it", patch.owner, patch.name)
        return
    if patch.original is _MISSING:
        delattr(patch.owner, patch.name)
    else:
        setattr(patch.owner, patch.name, patch.original)


class TokentrailInstrumentor(BaseInstrumentor):
    """Base of tokentrail's provider instrumentors; subclasses declare the class attributes."""

    #: name for ``coexistence.should_instrument``
    provider: str = ""
    tracer_name: str = ""
    targets: tuple[Target, ...] = ()
    #: provider-specific environment switches read at instrument time: {name: default}
    switches: Mapping[str, bool] = {}

    def _instrument(self, **kwargs: Any) -> None:
        breakers.install()
        rate_card.card()  # read the rate-card files now: the first call may run on an async app's event loop
        self._patches: list[_Patch] = []
        if not coexistence.should_instrument(self.provider):
            _log.info("tokentrail: TOKENTRAIL_COEXISTENCE=defer; not patching the %s SDK", self.provider)
            return
        tracer_provider = kwargs.get("tracer_provider")
        self._instruments = instruments = Instruments(
            trace.get_tracer(self.tracer_name, tracer_provider=tracer_provider),
            tracer_provider=tracer_provider,
            meter_provider=kwargs.get("meter_provider"),
            capture_content=_content_capture_asked(),
            switches={name: env_flag(name, default) for name, default in self.switches.items()},
        )
        for target in self.targets:
            try:
                self._patches.append(_patch(target, instruments))
            except Exception:
                level = logging.DEBUG if target.optional else logging.WARNING
                _log.log(level, "tokentrail: could not patch %s %s", target.module, target.path,
                         exc_info=_log.isEnabledFor(logging.DEBUG))

    def _uninstrument(self, **kwargs: Any) -> None:
        instruments = getattr(self, "_instruments", None)
        if instruments is not None:
            instruments.active = False
        for patch in reversed(getattr(self, "_patches", ())):
            try:
                _restore(patch)
            except Exception:
                _log.debug("tokentrail: could not unpatch %r.%s", patch.owner, patch.name, exc_info=True)
        self._patches = []
        self._instruments = None
