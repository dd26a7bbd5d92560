"""Join keys with the provider's bill, stamped on each call at span start.

What the admin APIs group by and the client knows: OpenAI project and organization (when the
client sets them), the Anthropic workspace (``TOKENTRAIL_ANTHROPIC_WORKSPACE``: a key cannot tell
it), and the key's hint in the redacted form the admin APIs list it (never the key). Off with
``TOKENTRAIL_JOIN_KEYS=false``. Imports nothing heavier than ``tokentrail.config`` (its cheap
environment reader): instrumentation calls it on every call.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from tokentrail.config import env
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedMemo

ENV = "TOKENTRAIL_JOIN_KEYS"
WORKSPACE_ENV = "TOKENTRAIL_ANTHROPIC_WORKSPACE"
#: A key shorter than this gets no hint: its first and last characters would give most of it away.
MIN_KEY_CHARS = 24


def enabled() -> bool:
    return env(ENV, "true").strip().lower() not in ("false", "0", "no", "off")


def key_hint(key: Any, head: int) -> str | None:
    """``sk-proj-...a1b2``: the first ``head`` and the last 4 characters, as the admin APIs list keys."""
    if not isinstance(key, str) or len(key) < MIN_KEY_CHARS:
        return None
    return f"{key[:head]}...{key[-4:]}"


def openai(client: Any) -> Mapping[str, str]:
    """Project, organization and key hint of an ``openai.OpenAI`` client (admin API:
    ``redacted_value``), made once per (project, organization, key): read-only."""
    if client is None or not enabled():
        return _NONE
    ids = (getattr(client, "project", None), getattr(client, "organization", None), getattr(client, "api_key", None))
    return _memoised(_openai, ids, _openai_keys)


def anthropic(client: Any) -> Mapping[str, str]:
    """Workspace (configured) and key hint of an ``anthropic.Anthropic`` client (admin API:
    ``partial_key_hint``), made once per (workspace, key): read-only."""
    if client is None or not enabled():
        return _NONE
    return _memoised(_anthropic, (env(WORKSPACE_ENV, ""), getattr(client, "api_key", None)), _anthropic_keys)


def _openai_keys(ids: tuple) -> Mapping[str, str]:
    project, organization, key = ids
    return _present({attr.TOKENTRAIL_PROVIDER_PROJECT: project, attr.TOKENTRAIL_PROVIDER_ORGANIZATION: organization,
                     attr.TOKENTRAIL_PROVIDER_API_KEY_HINT: key_hint(key, 8)})


def _anthropic_keys(ids: tuple) -> Mapping[str, str]:
    workspace, key = ids
    return _present({attr.TOKENTRAIL_PROVIDER_WORKSPACE: workspace.strip(),
                     attr.TOKENTRAIL_PROVIDER_API_KEY_HINT: key_hint(key, 16)})


def _present(found: dict[str, Any]) -> Mapping[str, str]:
    return MappingProxyType({k: v for k, v in found.items() if isinstance(v, str) and v})


def _memoised(memo: BoundedMemo, ids: tuple, make: Any) -> Mapping[str, str]:
    try:
        return memo.get(ids, make)
    except TypeError:  # an unhashable value: made each time
        return make(ids)


_NONE: Mapping[str, str] = MappingProxyType({})
_openai: BoundedMemo[tuple, Mapping[str, str]] = BoundedMemo(256)
_anthropic: BoundedMemo[tuple, Mapping[str, str]] = BoundedMemo(256)
