"""Reading provider responses and requests, one rule for every provider.

- ``field(obj, name)``: a field of a dict, a pydantic model (declared or ``model_extra``) or any
  object; a mapping missing ``snake_name`` is also asked for ``snakeName`` (REST JSON).
- ``reader(obj)``: ``field(obj, name)`` as a function of the name, cheaper per read (a
  pydantic model's declared fields are read from its dict straight).
- ``block(obj, name)``: a nested object (details, metadata): absent, or an object/mapping
  (``as_block`` checks a value already read).
- ``items(obj, name)``: a list field (choices, candidates, output items); () when it is not a list.
- ``reported(obj, *names)``: the raw values of a usage block's main counts, or None when the
  block is absent or reports none of them (then the call has no usage: ``no_usage``).
- ``count(value)``: a token count. Missing (None) is 0, or malformed when ``required``.
  Anything else that is not a non-negative whole number (a bool, a negative, 1.5, "many",
  a list) raises ``InvalidUsage``: the call is then recorded as ``no_usage``.
- ``prompt_chars(value)``: characters of text in a request, for the pre-flight estimate;
  a bounded walk (nodes and depth), media parts at a flat allowance.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from tokentrail.processor.usage import InvalidUsage
from tokentrail.state import BoundedMemo

_NO_EXTRA = object()
_camel = BoundedMemo(1024)

R = TypeVar("R", bound=Callable[..., Any])


def validated(reader: R) -> R:
    """Mark a usage reader whose every ``Usage`` is already ``validate()``d (or None):
    ``LLMCall.read_usage`` keeps it as it is rather than validating it a second time."""
    reader.validated = True  # type: ignore[attr-defined]
    return reader


def _camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` / ``obj.name``; ``default`` when absent or None.

    Runs a dozen times per call, often for absent names: a pydantic model answers from its
    dicts, without the costly AttributeError that ``getattr(model, name, None)`` swallows.
    """
    if obj is None:
        return default
    if type(obj) is dict:
        value = _get(obj, name)
    else:
        fields = getattr(obj, "__dict__", None)
        if fields is not None and name in fields:
            value = fields[name]
        else:
            extra = getattr(obj, "__pydantic_extra__", _NO_EXTRA)
            if extra is not _NO_EXTRA:  # a pydantic model: declared fields are in __dict__
                value = extra.get(name) if extra else None
            elif isinstance(obj, Mapping):
                value = _get(obj, name)
            else:
                value = getattr(obj, name, None)
    return default if value is None else value


def reader(obj: Any) -> Callable[[str], Any]:
    """``lambda name: field(obj, name)``, for reading several fields of one object."""
    if obj is not None and type(obj) is not dict:
        fields = getattr(obj, "__dict__", None)
        # a pydantic model without extra fields: field() would answer from this dict alone
        if type(fields) is dict and not getattr(obj, "__pydantic_extra__", True):
            return fields.get
    return functools.partial(field, obj)


def _get(mapping: Mapping[str, Any], name: str) -> Any:
    value = mapping.get(name)
    if value is None and "_" in name:
        value = mapping.get(_camel.get(name, _camel_case))
    return value


_SCALARS = (str, bytes, bytearray, int, float, list, tuple)


def block(obj: Any, name: str | None = None) -> Any:
    """``field(obj, name)`` (or ``obj`` itself) when it is absent or an object; raises
    ``InvalidUsage`` for a scalar or a list where an object belongs."""
    return as_block(obj if name is None else field(obj, name), name)


def as_block(value: Any, name: str | None = None) -> Any:
    """``value`` (the ``name`` field of something) when it is absent or an object, as ``block``."""
    if isinstance(value, _SCALARS):
        raise InvalidUsage(f"{name or 'usage'} is not an object: {value!r}")
    return value


def items(obj: Any, name: str) -> list[Any] | tuple[Any, ...]:
    """``field(obj, name)`` when it is a list or tuple, else ()."""
    value = field(obj, name)
    return value if isinstance(value, (list, tuple)) else ()


def reported(obj: Any, *names: str) -> tuple[Any, ...] | None:
    """``field(obj, name)`` for each name, or None when ``obj`` (an object, see ``block``)
    is absent or has none of them."""
    obj = block(obj)
    values = tuple(field(obj, name) for name in names)
    return None if all(value is None for value in values) else values


def count(value: Any, *, required: bool = False) -> int:
    """A token count as an int (see the module docstring)."""
    if value is None:
        if required:
            raise InvalidUsage("missing token count")
        return 0
    if type(value) is int:
        if value < 0:
            raise InvalidUsage(f"negative token count {value!r}")
        return value
    if isinstance(value, bool):
        raise InvalidUsage(f"boolean token count {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if "." in value else int(value.strip())
        except ValueError:
            raise InvalidUsage(f"token count {value!r} is not a number") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidUsage(f"token count {value!r} is not a whole number")
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise InvalidUsage(f"bad token count {value!r}")
    return int(value)


# --- request size ---------------------------------------------------------------------------
MAX_NODES = 20_000
MAX_DEPTH = 24
#: a media part (image, document, audio, file) counts as this many characters (about 1,000 tokens)
MEDIA_CHARS = 3_000
_MEDIA_TYPES = ("image", "document", "file", "audio", "video")
# keys whose value is a media payload (OpenAI, Anthropic, Gemini, Bedrock shapes): never its length
_MEDIA_KEYS = frozenset({"image", "image_url", "input_image", "document", "video", "input_audio", "audio",
                         "inline_data", "inlineData", "file_data", "fileData", "file"})
_NOT_TEXT = frozenset({"type", "cache_control", "__pydantic_extra__"})


def prompt_chars(value: Any, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> int:
    """Characters of text in a request value (str, bytes, dicts, lists, pydantic models)."""
    budget = [max_nodes]
    try:
        return _chars(value, budget, max_depth)
    except Exception:  # an exotic request: estimate what was counted, never fail the call
        return 0


def _chars(value: Any, budget: list[int], depth: int) -> int:
    if value is None or budget[0] <= 0 or depth < 0:
        return 0
    budget[0] -= 1
    kind = type(value)
    # Runs on every call's whole prompt: the plain JSON types first, without the ABC checks.
    if kind is str or kind is bytes:
        return len(value)
    if kind is list or kind is tuple:
        mapping = None
    elif kind is dict:
        mapping = value
    elif isinstance(value, (str, bytes, bytearray)):
        return len(value)
    elif isinstance(value, (list, tuple)):
        mapping = None
    elif isinstance(value, Mapping):
        mapping = value
    elif hasattr(kind, "model_fields"):  # a pydantic model: its declared fields
        mapping = vars(value)
    else:
        return 0
    total = 0
    if mapping is None:
        for item in value:
            total += _chars(item, budget, depth - 1)
        return total
    part = mapping.get("type")
    if isinstance(part, str) and _is_media(part):
        return MEDIA_CHARS
    for key, item in mapping.items():
        if item is None or key in _NOT_TEXT:
            continue
        if key in _MEDIA_KEYS:
            total += MEDIA_CHARS
        elif type(item) is str and budget[0] > 0 and depth > 0:  # _chars(item, ...) of a string, inline
            budget[0] -= 1
            total += len(item)
        else:
            total += _chars(item, budget, depth - 1)
    return total


def _media_kind(kind: str) -> bool:
    return any(media in kind for media in _MEDIA_TYPES)


_media_kinds: BoundedMemo[str, bool] = BoundedMemo(256)


def _is_media(kind: str) -> bool:
    return _media_kinds.get(kind, _media_kind)
