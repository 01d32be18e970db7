"""Every store implements the one Store protocol, method for method and parameter for parameter."""
from __future__ import annotations

import inspect

from gateway.store import base, sqlite


def _methods(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_sqlite_store_implements_the_protocol():
    wanted, got = _methods(base.Store), _methods(sqlite.Store)
    assert set(wanted) <= set(got), sorted(set(wanted) - set(got))
    for name, sig in wanted.items():
        assert list(sig.parameters) == list(got[name].parameters), name
        assert inspect.iscoroutinefunction(getattr(sqlite.Store, name)), name
