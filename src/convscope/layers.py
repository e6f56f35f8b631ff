"""Finding layers: by exact name, alias, dotted path, index, glob or type."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

from convscope.adapters.base import LayerHandle
from convscope.errors import LayerNotFoundError, OptionError, hint

LayerQuery = str | int | type | LayerHandle
"""What identifies a layer: name, alias, dotted path, index, glob (``"conv*"``), type name or class."""

_GLOB_CHARS = set("*?[")


class AmbiguousLayerError(LayerNotFoundError, OptionError):
    """A query that should name one layer matched several (a lookup failure and a bad option value)."""


def listing(names: Sequence[str], limit: int = 8) -> str:
    """Quoted names, the first ``limit`` (default 8) then ``…`` and the count: ``'a', 'b', … (12 in all)``."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def ambiguous(query: object, names: Sequence[str], why: str = "name one of them") -> AmbiguousLayerError:
    """The error for a query that matched several layers where one is needed; ``why`` ends the message."""
    return AmbiguousLayerError(f"layer query {query!r} matches {len(names)} layers ({listing(names)}); {why}")


class LayerIndex:
    """Lookup table over an adapter's layer handles, with user aliases."""

    def __init__(self, handles: Sequence[LayerHandle]) -> None:
        self.handles = list(handles)
        self.aliases: dict[str, LayerHandle] = {}
        self._by_name = {h.name: h for h in self.handles}
        self._by_path = {h.path: h for h in self.handles}

    # -- names ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [h.name for h in self.handles]

    def all_names(self) -> list[str]:
        """Names, aliases and paths: everything an exact query may use."""
        return list(dict.fromkeys([*self.aliases, *self._by_name, *self._by_path]))

    def display_name(self, handle: LayerHandle) -> str:
        """The newest alias of a layer, else its canonical name."""
        return handle.aliases[-1] if handle.aliases else handle.name

    def rename(self, old: LayerQuery, new: str) -> LayerHandle:
        """Add ``new`` as an alias of the layer ``old`` names; both resolve afterwards."""
        if not isinstance(new, str) or not new or any(c in _GLOB_CHARS for c in new):
            raise OptionError(f"new layer name must be a non-empty string without * ? [; got {new!r}")
        handle = self.find(old)
        owner = self._exact(new)
        if owner is not None and owner is not handle:
            raise OptionError(
                f"cannot rename {handle.name!r} to {new!r}: {new!r} already names layer {owner.name!r}; "
                "rename that one first or pick another name"
            )
        self.aliases[new] = handle
        if new != handle.name and new not in handle.aliases:
            handle.aliases.append(new)
        return handle

    # -- lookup ----------------------------------------------------------------------------
    def _exact(self, name: str) -> LayerHandle | None:
        return self.aliases.get(name) or self._by_name.get(name) or self._by_path.get(name)

    def find(self, query: LayerQuery) -> LayerHandle:
        """Exactly one layer; glob or type queries must match a single layer."""
        found = self.find_all(query)
        if len(found) > 1:
            raise ambiguous(query, [h.name for h in found])
        return found[0]

    def find_all(self, query: LayerQuery | Iterable[LayerQuery]) -> list[LayerHandle]:
        """Every layer a query (or a list of queries) matches, in query order, without repeats."""
        if isinstance(query, list | tuple | set):
            out: list[LayerHandle] = []
            for q in query:
                out.extend(h for h in self.find_all(q) if h not in out)
            if not out:
                raise LayerNotFoundError("empty layer list; name at least one layer")
            return out
        return self._find_one_query(query)

    def _find_one_query(self, query: Any) -> list[LayerHandle]:
        if isinstance(query, LayerHandle):
            if query in self.handles:
                return [query]
            raise LayerNotFoundError(f"layer {query.name!r} belongs to another model")
        if isinstance(query, bool) or not isinstance(query, int | str | type):
            raise LayerNotFoundError(
                f"cannot find a layer by {type(query).__name__} {query!r}; use a name, dotted path, "
                "index, glob such as 'conv*', type name such as 'Conv2D' or a layer class"
            )
        if isinstance(query, int):
            return [self._by_index(query)]
        if isinstance(query, type):
            hits = [h for h in self.handles if isinstance(h.module, query)]
            if not hits:
                raise LayerNotFoundError(
                    f"no layer of type {query.__name__}; types present: {self._type_list()}"
                )
            return hits
        return self._by_string(query)

    def _by_index(self, index: int) -> LayerHandle:
        n = len(self.handles)
        if not -n <= index < n:
            raise LayerNotFoundError(f"layer index {index} is out of range; this model has {n} layers (0..{n - 1})")
        return self.handles[index]

    def _by_string(self, query: str) -> list[LayerHandle]:
        exact = self._exact(query)
        if exact is not None:
            return [exact]
        if any(c in _GLOB_CHARS for c in query):
            hits = [h for h in self.handles if self._glob_match(h, query)]
            if hits:
                return hits
            raise LayerNotFoundError(f"no layer matches the pattern {query!r}; layers: {self._short_list()}")
        typed = [h for h in self.handles if h.type_name == query or h.type_name.lower() == query.lower()]
        if typed:
            return typed
        near = hint(query, self.all_names())
        raise LayerNotFoundError(f"no layer {query!r}" + (f"; {near}" if near else f"; layers: {self._short_list()}"))

    def _glob_match(self, handle: LayerHandle, pattern: str) -> bool:
        names = [handle.name, handle.path, *handle.aliases]
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)

    def _short_list(self) -> str:
        return listing(self.names(), limit=10)

    def _type_list(self) -> str:
        return ", ".join(sorted({h.type_name for h in self.handles}))

