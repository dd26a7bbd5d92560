"""The public names of ``tokentrail`` and ``tokentrail.testing``, locked: adding or removing one is
a decision, made here (like httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

import tokentrail
import tokentrail.testing

TOKENTRAIL = [
    "BudgetExceeded",
    "attach_from_environ",
    "attribute",
    "consuming",
    "current_owner",
    "environ",
    "extract",
    "fallback",
    "inject",
    "owner_span_attributes",
    "retry",
    "task",
    "wrap",
]

TESTING = [
    "FakeProviderServer",
    "FakeRequest",
    "FakeResponse",
    "InMemoryPipeline",
    "PROVIDER_FAKES",
    "fake_provider",
]


def _public_members(module: ModuleType) -> list[str]:
    """Public names bound in the module, submodules aside (importing one binds it on its package)."""
    return sorted(name for name, value in vars(module).items()
                  if not name.startswith("_") and not isinstance(value, ModuleType))


def test_tokentrail_exports_exactly_the_public_api():
    assert sorted(tokentrail.__all__) == TOKENTRAIL
    assert _public_members(tokentrail) == TOKENTRAIL


def test_tokentrail_testing_exports_exactly_its_helpers():
    assert sorted(tokentrail.testing.__all__) == TESTING
    assert _public_members(tokentrail.testing) == TESTING


@pytest.mark.parametrize("module", ["tokentrail.attribution", "tokentrail.propagation", "tokentrail.tasks",
                                    "tokentrail.budgets", "tokentrail.errors"])
def test_every_all_lists_only_public_names_the_module_defines(module):
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", ()):
        assert not name.startswith("_"), (module, name)
        assert hasattr(mod, name), (module, name)


def test_the_top_level_names_are_the_modules_own():
    """One object per name: ``tokentrail.x`` is the same object as where it is defined."""
    homes = {"attribute": "attribution", "current_owner": "attribution", "owner_span_attributes": "attribution",
             "task": "tasks", "retry": "tasks", "fallback": "tasks", "BudgetExceeded": "errors",
             "inject": "propagation", "extract": "propagation", "consuming": "propagation", "wrap": "propagation",
             "environ": "propagation", "attach_from_environ": "propagation"}
    assert sorted(homes) == TOKENTRAIL
    for name, home in homes.items():
        assert getattr(tokentrail, name) is getattr(importlib.import_module(f"tokentrail.{home}"), name)


def test_scopes_share_one_shape():
    """Every scope is a context manager, an async context manager and a decorator; only task's
    ``with ... as`` differs (it gives the run's state), see the package docstring."""
    scopes = [tokentrail.attribute(tenant="acme"), tokentrail.task("t"), tokentrail.retry(1),
              tokentrail.fallback("gpt-4o")]
    for scope in scopes:
        for method in ("__enter__", "__exit__", "__aenter__", "__aexit__", "__call__"):
            assert callable(getattr(scope, method)), (scope, method)
    with tokentrail.attribute(tenant="acme") as a, tokentrail.retry(1) as r, tokentrail.fallback("gpt-4o") as f:
        assert (type(a), type(r), type(f)) == (tokentrail.attribute, tokentrail.retry, tokentrail.fallback)
    with tokentrail.task("t") as t:
        assert (t.name, t.calls, t.cost_usd) == ("t", 0, 0.0)
    assert "TaskState" in inspect.getdoc(tokentrail)
