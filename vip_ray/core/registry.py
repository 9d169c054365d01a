"""One registry helper for every pluggable name: models, strategies, placements, aggregators,
engines. Names flow from here into the CLI choices and the scenario schema's error messages.

Entries may be registered lazily as ``"module:attribute"`` strings, so that listing the names
(e.g. for ``--help``) imports nothing heavy; the object is imported on first ``get``.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """``registry.get(name)`` of a name nobody registered; the message lists the allowed names."""

    def __init__(self, kind: str, name: Any, allowed: list[str]):
        self.kind, self.name, self.allowed = kind, name, allowed
        close = difflib.get_close_matches(str(name).lower(), [a.lower() for a in allowed], n=1)
        hint = ""
        if close:
            hint = f" (did you mean {next(a for a in allowed if a.lower() == close[0])!r}?)"
        super().__init__(f"unknown {kind} {name!r}; allowed: {', '.join(allowed)}{hint}")

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain line
        return self.args[0]


class Registry(Generic[T]):
    """``name -> object`` with a kind for messages (``"strategy"``, ``"engine"`` …).

    ``names()`` are sorted, unless ``ordered``: then they keep the order of registration (the
    models keep VP's table order)."""

    def __init__(self, kind: str, *, ordered: bool = False):
        self.kind = kind
        self.ordered = ordered
        self._items: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None) -> Any:
        """``reg.register("x", obj)``, ``reg.register("x", "pkg.mod:attr")`` (lazy), or as a
        decorator ``@reg.register("x")``."""
        if obj is None:
            def wrap(o):
                self._items[name] = o
                return o
            return wrap
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            obj = self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name (a list from YAML)
            raise UnknownName(self.kind, name, self.names()) from None
        if isinstance(obj, str):  # lazy entry: import on first use
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._items[name] = obj
        return obj

    __getitem__ = get

    def names(self) -> list[str]:
        return list(self._items) if self.ordered else sorted(self._items)

    def copy(self) -> "Registry[T]":
        """A registry with the same entries (e.g. for a test that registers its own)."""
        out: Registry[T] = Registry(self.kind, ordered=self.ordered)
        out._items = dict(self._items)
        return out

    def check(self, name: Any) -> str:
        """``name`` if registered, else :class:`UnknownName` (imports nothing, unlike ``get``)."""
        if name not in self:
            raise UnknownName(self.kind, name, self.names())
        return name

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:  # unhashable (a list from YAML): not a name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self.get(n)) for n in self.names()]

    def where(self, keep: Callable[[T], bool]) -> list[str]:
        """The names whose object satisfies ``keep``."""
        return [n for n, o in self.items() if keep(o)]
