"""Registries of interchangeable components, filled by the components' own files.

An order, a tokenizer kind or a sampler registers itself where it is defined, with its metadata (after timm's
``@register_model``); a registry imports every module of its component folder the first time it is read
(pkgutil discovery), so a new component is one new file. Every list of names (CLI choices and help, `argen bench`,
`argen demo`, bench/*.py, the contract tests) is read from a registry, never written out.

Entries are listed by ``rank``, then name: the four orders in the order the README introduces them, a new one after.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, Generic, TypeVar

from argen.errors import ArgenError

T = TypeVar("T")
DEFAULT_RANK = 1000


def import_modules(package: str) -> list[ModuleType]:
    """Every module directly inside ``package``, imported, in file-name order."""
    root = importlib.import_module(package)
    return [importlib.import_module(f"{package}.{info.name}") for info in pkgutil.iter_modules(root.__path__)]


def same_definition(first: Any, second: Any) -> bool:
    """Whether two registered objects are one definition (also after a module was imported again)."""
    names = ("__module__", "__qualname__")
    return first is second or all(getattr(first, name, None) == getattr(second, name, object()) for name in names)


class Registry(Mapping[str, T], Generic[T]):
    """Name → component (a class or a function), with optional metadata; discovered from ``package`` on first use.

    ``what`` names the component in messages ("order", "sampler").
    """

    def __init__(self, what: str, package: str) -> None:
        self.what = what
        self.package = package
        self._entries: dict[str, T] = {}
        self._ranks: dict[str, int] = {}
        self._info: dict[str, Any] = {}
        self._discovered = False

    def add(self, name: str, entry: T, *, rank: int = DEFAULT_RANK, info: Any = None) -> T:
        """Register ``entry`` as ``name``; returns it, so that this works as the body of a decorator."""
        if not name:
            raise ValueError(f"a {self.what} needs a name to be registered")
        if name in self._entries and not same_definition(self._entries[name], entry):
            raise ValueError(f"two {self.what}s are registered as {name!r}: rename one of them")
        self._entries[name], self._ranks[name], self._info[name] = entry, rank, info
        return entry

    def _all(self) -> dict[str, T]:
        if not self._discovered:
            self._discovered = True  # first: the modules imported here register themselves while this runs
            import_modules(self.package)
        return self._entries

    def __getitem__(self, name: str) -> T:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        entries = self._all()
        return iter(sorted(entries, key=lambda name: (self._ranks[name], name)))

    def __len__(self) -> int:
        return len(self._all())

    def lookup(self, name: str) -> T:
        """The entry ``name``, or an `ArgenError` listing the choices."""
        if name not in self:
            raise ArgenError(f"unknown {self.what} {name!r}: choose one of {', '.join(self)}")
        return self[name]

    def info(self, name: str) -> Any:
        """The metadata ``name`` was registered with (None if none)."""
        self.lookup(name)
        return self._info[name]


def listing(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: names in a sentence."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


__all__ = ["DEFAULT_RANK", "Registry", "import_modules", "listing"]
