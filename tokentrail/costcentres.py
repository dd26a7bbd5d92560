"""Cost centres: which finance cost centre pays for a team's, a feature's or a tenant's LLM spend.

A small YAML file (``TOKENTRAIL_COST_CENTRES``, or ``tokentrail chargeback --cost-centres FILE``)::

    teams:                 # team -> cost centre
      support: CC-4100
      search: CC-4200
    features:              # feature -> cost centre
      summarize: CC-4300
    tenants:               # tenant -> cost centre (e.g. a customer-funded project)
      acme: CC-9001

A call's cost centre is its team's, else its feature's, else its tenant's (the first that is mapped):
the team owns the budget, a feature mapping places the spend of shared or team-less code, and a tenant
mapping is the last resort. A call none of them maps is ``(no cost centre)``, never dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

ENV = "TOKENTRAIL_COST_CENTRES"
NO_COST_CENTRE = "(no cost centre)"
#: Section of the file -> the owner field it maps, in precedence order (first mapped wins).
SECTIONS = {"teams": "team", "features": "feature", "tenants": "tenant"}
# The values tokentrail.attribute() accepts: a key outside them can never match a call.
_OWNER_VALUE = re.compile(r"^[A-Za-z0-9._:@/+-]{1,128}$")
_MAX_CENTRE = 128


class CostCentreError(ValueError):
    """A cost-centres file that cannot be used; one line naming the file and the entry."""


@dataclass(frozen=True)
class CostCentres:
    path: str
    teams: dict[str, str] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)

    def of(self, team: str | None, feature: str | None, tenant: str | None) -> str:
        """The cost centre of a call's owner: by team, else feature, else tenant; else ``(no cost centre)``."""
        for mapping, value in ((self.teams, team), (self.features, feature), (self.tenants, tenant)):
            if value is not None and value in mapping:
                return mapping[value]
        return NO_COST_CENTRE

    def centres(self) -> list[str]:
        return sorted({*self.teams.values(), *self.features.values(), *self.tenants.values()})


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key given twice in one mapping (PyYAML silently keeps the last)."""


class _Duplicate(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"{key!r} is given twice (line {line}): each owner has one cost centre")


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in seen:
                raise _Duplicate(key, key_node.start_mark.line + 1)
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping says so
            break
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path: str) -> CostCentres:
    """The file at ``path``, validated; :class:`CostCentreError` (one line) when it cannot be used."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise CostCentreError(f"cost centres file {path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:  # not UTF-8 text, or a NUL in the path
        raise CostCentreError(f"cost centres file {path!r}: cannot read it as text ({exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _Duplicate as exc:
        raise CostCentreError(f"cost centres file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CostCentreError(f"cost centres file {path}: not valid YAML{where}: {problem}") from None
    return parse(data, path)


def parse(data: Any, path: str = "cost centres") -> CostCentres:
    """Validate the file's parsed content (see the module docstring for the format)."""
    where = f"cost centres file {path}"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CostCentreError(f"{where}: expected a mapping with teams:, features: and/or tenants:")
    sections: dict[str, dict[str, str]] = {}
    for section, entries in data.items():
        if section not in SECTIONS:
            raise CostCentreError(f"{where}: unknown section {section!r}: use {', '.join(s + ':' for s in SECTIONS)}")
        if entries is None:
            entries = {}
        if not isinstance(entries, dict):
            raise CostCentreError(f"{where}: {section}: expected a mapping of {SECTIONS[section]} -> cost centre")
        mapping = {}
        for owner, centre in entries.items():
            entry = f"{where}: {section}.{owner}"
            if isinstance(owner, int) and not isinstance(owner, bool):
                owner = str(owner)  # `4100:` in YAML is a number; the ledger holds the text
            if not isinstance(owner, str) or not _OWNER_VALUE.match(owner):
                raise CostCentreError(f"{entry}: a {SECTIONS[section]} is 1-128 characters of A-Za-z0-9._:@/+-")
            if isinstance(centre, bool) or not isinstance(centre, (str, int)):
                kind = "nothing" if centre is None else type(centre).__name__
                raise CostCentreError(f"{entry}: the cost centre must be a name or a number, not {kind}")
            centre = str(centre).strip()
            if not centre or len(centre) > _MAX_CENTRE or centre == NO_COST_CENTRE:
                raise CostCentreError(f"{entry}: the cost centre must be 1-{_MAX_CENTRE} characters")
            mapping[owner] = centre
        sections[section] = mapping
    return CostCentres(path, **sections)


def configured(path: str | None = None) -> CostCentres | None:
    """The cost centres from ``path``, else from ``$TOKENTRAIL_COST_CENTRES``; None when neither is set."""
    path = path or os.environ.get(ENV, "").strip() or None
    return None if path is None else load(path)
