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

from convscope.reporting.model import PictureRef


@dataclass
class Table:
    """A small table of text cells: ``header`` (column names), ``rows`` and a ``caption`` (default none)."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class Link:
    """A link from the page to a file beside it: ``href`` (relative), its ``text`` and a ``detail`` line
    (default none)."""

    href: str
    text: str
    detail: str = ""


@dataclass
class Group:
    """A titled row of pictures inside a :class:`Section`, with a paragraph ``text`` (default none)."""

    title: str
    pictures: list[PictureRef]
    text: str = ""


@dataclass
class Section:
    """One titled section of the caller's own (see the module docstring); every part defaults to none.
    ``anchor`` (its id, for the navigation) defaults to ``"section-<title>"``, made unique on the page."""

    title: str
    text: str = ""
    pre: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    pictures: list[PictureRef] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    anchor: str = ""

    def all_pictures(self) -> list[PictureRef]:
        """The section's pictures in display order (its own, then each group's)."""
        return self.pictures + [p for g in self.groups for p in g.pictures]


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
