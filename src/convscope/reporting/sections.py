"""The caller's own titled sections of a report: text, preformatted blocks, tables, links and pictures.

``cs.report(scope, images, sections=[...])`` shows each :class:`Section` after the report's header, in the
report's own style, and lists it in the sticky navigation. A section holds, in display order: ``text`` (a
paragraph), ``pre`` (preformatted blocks, e.g. a model summary), ``tables``, ``links`` (files beside the
page), ``pictures`` and ``groups`` (titled rows of pictures). Section pictures are
:class:`~convscope.reporting.model.PictureRef` objects shown at their own size, with their ``note``,
``kind`` (CSS class) and ``data`` (``data-*`` facts).

Example::

    from convscope.reporting import Group, PictureRef, Section, report
    loss = PictureRef.of("section/training/loss", loss_image, "training loss per epoch (falls 2.30 → 0.08)")
    report(scope, images, out="report.html",
           sections=[Section("Training", "Six epochs of Adam on 1,437 digits.", pictures=[loss])])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from convscope.errors import OptionError
from convscope.reporting.model import PictureRef, shown

RESERVED = ("image/", "layer/", "attribution/")
"""Key prefixes of the report's own pictures; the caller's pictures use others (e.g. ``section/...``)."""

EXAMPLES = {
    "Section": "Section('Notes', 'trained for six epochs')",
    "Table": "Table(['metric', 'value'], [['accuracy', '98.1%']])",
    "Link": "Link('notes.txt', 'training notes')",
    "PictureRef": "PictureRef.of('section/loss', pil_image, 'loss per epoch')",
    "Group": "Group('a row', [PictureRef.of(...), ...])",
}


def items_of(where: str, name: str, value: Any, cls: type) -> list[Any]:
    """``value`` (a list or tuple of ``cls``; one ``cls`` alone; ``None``: none) as a list, else an
    :class:`OptionError` naming ``cs.reporting.<cls>``."""
    kind = cls.__name__
    if value is None:
        return []
    if isinstance(value, cls):
        return [value]
    if not isinstance(value, list | tuple):
        raise OptionError(f"{where}{name}={shown(value)} is not allowed; pass a list of cs.reporting.{kind} "
                          f"objects, e.g. {name}=[{EXAMPLES[kind]}]")  # fmt: skip
    for i, item in enumerate(value):
        if not isinstance(item, cls):
            raise OptionError(f"{where}{name}[{i}]={shown(item)} is not allowed; each item must be a "
                              f"cs.reporting.{kind}, e.g. {EXAMPLES[kind]}")  # fmt: skip
    return list(value)


def text_of(where: str, name: str, value: Any, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        what = "a non-empty str" if not empty else "a str"
        raise OptionError(f"{where}{name}={shown(value)} is not allowed; pass {what}"
                          + (" (one paragraph; several blocks go in pre=[...])" if name == "text" else ""))  # fmt: skip
    return value


@dataclass
class Table:
    """A small table of text cells: ``header`` (column names), ``rows`` (each as long as the header; numbers
    are shown as text) and a ``caption`` (default none)."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        where = "Table: "
        if not isinstance(self.header, list | tuple) or not self.header:
            raise OptionError(f"{where}header={shown(self.header)} is not allowed; pass a non-empty list of column "
                              f"names, e.g. {EXAMPLES['Table']}")  # fmt: skip
        self.header = [self._cell("header", i, c) for i, c in enumerate(self.header)]
        if not isinstance(self.rows, list | tuple):
            raise OptionError(f"{where}rows={shown(self.rows)} is not allowed; pass a list of rows (lists of "
                              f"{len(self.header)} cells), e.g. {EXAMPLES['Table']}")  # fmt: skip
        rows = []
        for r, row in enumerate(self.rows):
            if not isinstance(row, list | tuple):
                raise OptionError(f"{where}rows[{r}]={shown(row)} is not allowed; each row must be a list of "
                                  f"{len(self.header)} cells (one per header column)")  # fmt: skip
            if len(row) != len(self.header):
                raise OptionError(f"{where}rows[{r}] has {len(row)} cells but the header has {len(self.header)} "
                                  f"({', '.join(map(repr, self.header))}); give each row one cell per column")  # fmt: skip
            rows.append([self._cell(f"rows[{r}]", i, c) for i, c in enumerate(row)])
        self.rows = rows
        self.caption = text_of(where, "caption", self.caption)

    @staticmethod
    def _cell(name: str, i: int, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise OptionError(f"Table: {name}[{i}]={shown(value)} is not allowed; each cell must be a str (or a number)")


@dataclass(frozen=True)
class Link:
    """A link from the page to a file beside it: ``href`` (relative), its ``text`` and a ``detail`` line
    (default none)."""

    href: str
    text: str
    detail: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        text_of("Link: ", "href", self.href, empty=False)
        text_of("Link: ", "text", self.text, empty=False)
        text_of("Link: ", "detail", self.detail)


@dataclass
class Group:
    """A titled row of pictures inside a :class:`Section`, with a paragraph ``text`` (default none)."""

    title: str
    pictures: list[PictureRef]
    text: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        where = f"Group({self.title!r}): " if isinstance(self.title, str) else "Group: "
        text_of(where, "title", self.title)
        self.pictures = items_of(where, "pictures", self.pictures, PictureRef)
        for p in self.pictures:
            p.check()
        text_of(where, "text", self.text)


@dataclass
class Section:
    """One titled section of the caller's own (see the module docstring); every part defaults to none.
    ``anchor`` (its id, for the navigation) defaults to ``"section-<title>"``, made unique on the page.

    ``title`` is a non-empty str and ``text`` one paragraph (a str); ``pre`` a list of str (one str is one
    block); ``tables``, ``links``, ``pictures`` and ``groups`` lists of :class:`Table`, :class:`Link`,
    :class:`~convscope.reporting.model.PictureRef` and :class:`Group` (one object alone is a one-item list).
    Anything else is an :class:`~convscope.errors.OptionError` when the section is made (and again, for
    changes since, when the report starts)."""

    title: str
    text: str = ""
    pre: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    pictures: list[PictureRef] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    anchor: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Validate (and normalise: tuples to lists, one object to a list) every part; an :class:`OptionError`
        naming the part, what it holds and the class to use."""
        if not isinstance(self.title, str) or not self.title.strip():
            raise OptionError(f"Section(title={shown(self.title)}) is not allowed; the title must be a non-empty "
                              f"str, e.g. {EXAMPLES['Section']}")  # fmt: skip
        where = f"Section({self.title!r}): "
        text_of(where, "text", self.text)
        pre = [self.pre] if isinstance(self.pre, str) else self.pre
        if not isinstance(pre, list | tuple) or not all(isinstance(t, str) for t in pre):
            bad = pre if not isinstance(pre, list | tuple) else next(t for t in pre if not isinstance(t, str))
            raise OptionError(f"{where}pre holds {shown(bad)}; pass a list of str (preformatted blocks), e.g. "
                              "pre=[str(scope.summary())]")  # fmt: skip
        self.pre = list(pre)
        self.tables = items_of(where, "tables", self.tables, Table)
        self.links = items_of(where, "links", self.links, Link)
        self.pictures = items_of(where, "pictures", self.pictures, PictureRef)
        self.groups = items_of(where, "groups", self.groups, Group)
        parts: list[Table | Link | PictureRef | Group] = [*self.tables, *self.links, *self.pictures, *self.groups]
        for part in parts:
            part.check()
        text_of(where, "anchor", self.anchor)

    def all_pictures(self) -> list[PictureRef]:
        """The section's pictures in display order (its own, then each group's)."""
        return self.pictures + [p for g in self.groups for p in g.pictures]


def check_sections(sections: Any) -> list[Section]:
    """The caller's ``sections=`` (a list of :class:`Section`; one alone; ``None``: none), each checked
    again, with picture keys unique among them and apart from the report's own; else an :class:`OptionError`."""
    if isinstance(sections, str):
        raise OptionError(f"sections={shown(sections)} is not allowed; pass a list of cs.reporting.Section "
                          f"objects, e.g. sections=[{EXAMPLES['Section']}]")  # fmt: skip
    out: list[Section] = items_of("", "sections", sections, Section)
    seen: dict[str, tuple[PictureRef, str]] = {}
    for s in out:
        s.check()
        for p in s.all_pictures():
            if p.key.startswith(RESERVED):
                raise OptionError(f"Section({s.title!r}): picture key {p.key!r} is the report's own (keys starting "
                                  f"with {', '.join(map(repr, RESERVED))}); name yours e.g. 'section/{p.key}'")  # fmt: skip
            if p.key in seen and seen[p.key][0] is not p:
                raise OptionError(f"two different pictures have the key {p.key!r} (in Section {seen[p.key][1]!r} "
                                  f"and Section {s.title!r}); pictures that share a key are embedded once, so give "
                                  "each its own key (the same PictureRef object may appear twice)")  # fmt: skip
            seen.setdefault(p.key, (p, s.title))
    return out


def check_links(links: Any) -> list[Link]:
    """The caller's ``links=`` (a list of :class:`Link`; one alone; ``None``: none), else an :class:`OptionError`."""
    if isinstance(links, str):
        raise OptionError(f"links={shown(links)} is not allowed; pass a list of cs.reporting.Link objects, e.g. "
                          f"links=[Link({links!r}, 'what it is')]")  # fmt: skip
    out: list[Link] = items_of("", "links", links, Link)
    for k in out:
        k.check()
    return out


def slug(title: str) -> str:
    """``"Dataset examples"`` → ``"section-dataset-examples"`` (never starts with ``layer-``)."""
    return "section-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "untitled")


def with_anchors(sections: Sequence[Section]) -> list[Section]:
    """Copies of ``sections`` whose anchors are set and unique (``-2``, ``-3``... on repeats)."""
    seen: set[str] = set()
    out = []
    for s in sections:
        base = s.anchor or slug(s.title)
        anchor, n = base, 1
        while anchor in seen:
            n += 1
            anchor = f"{base}-{n}"
        seen.add(anchor)
        out.append(replace(s, anchor=anchor))
    return out
