"""A self-contained HTML page (images embedded as data URIs) from titled sections, and PNG helpers.

Figures may carry a ``note`` (shown under the caption, e.g. why an attribution map is empty), a
``kind`` (the figure's CSS class, e.g. ``attribution``) and ``data`` (``data-*`` attributes), so
the page states in text what each picture shows.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2rem}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figcaption{font-size:.85rem;color:#555;max-width:520px}
figure.attribution{margin:.3rem .3rem .3rem 0;display:inline-flex;flex-direction:column;width:min-content}
figure.attribution figcaption{max-width:none;font-size:.75rem}figure.attribution img{max-width:none}
.note{display:block;color:#a33;margin-top:.2rem}
img{image-rendering:pixelated;max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.75rem;overflow-x:auto;font-size:.8rem}
ul.reports{background:#eef5ff;border:1px solid #bcd;padding:.6rem 1rem .6rem 2rem;font-size:1rem}
figure.tile{margin:.2rem .3rem .2rem 0;display:inline-flex;flex-direction:column;width:150px}
figure.tile figcaption{max-width:none;font-size:.72rem}figure.tile img{max-width:none}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem}
"""


@dataclass
class Figure:
    """One picture: PNG bytes on disk (``file``, relative to the page) plus a caption.

    ``note``: a second line under the caption (default none); ``kind``: extra CSS class (default none);
    ``data``: ``data-*`` attributes of the ``<figure>`` (default none).
    """

    file: Path
    caption: str
    width: int | None = None
    note: str = ""
    kind: str = ""
    data: dict[str, str] = field(default_factory=dict)


@dataclass
class Strip:
    """A row of figures under one heading (e.g. one attribution method on eight inputs)."""

    title: str
    figures: list[Figure]
    text: str = ""


@dataclass
class Table:
    """A small table: a header row and text cells."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    pre: list[str] = field(default_factory=list)
    strips: list[Strip] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)


def save(img: Any, path: Path) -> Path:
    """Save a PIL image or array as PNG at ``path``; returns ``path``."""
    from convscope.render import save_png

    save_png(img, path)
    return path


def upscale_image(img: Any, factor: int) -> Any:
    """``img`` enlarged ``factor`` times with nearest-neighbour sampling (pixels stay crisp)."""
    from PIL import Image

    if factor == 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.file.read_bytes()).decode("ascii")
    width = f" width='{fig.width}'" if fig.width else ""
    kind = f" class='{html.escape(fig.kind)}'" if fig.kind else ""
    attrs = "".join(f" data-{html.escape(k)}='{html.escape(v)}'" for k, v in fig.data.items())
    note = f"<span class='note'>{html.escape(fig.note)}</span>" if fig.note else ""
    return (
        f"<figure{kind}{attrs}><img alt='{html.escape(fig.caption)}' src='data:image/png;base64,{data}'{width}>"
        f"<figcaption><span class='label'>{html.escape(fig.caption)}</span> "
        f"<a href='{html.escape(fig.file.name)}'>png</a>{note}</figcaption></figure>"
    )


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    caption = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    return f"<table>{caption}<tr>{head}</tr>{body}</table>"


def _section(s: Section) -> list[str]:
    parts = [f"<section><h2>{html.escape(s.title)}</h2>"]
    if s.text:
        parts.append(f"<p>{html.escape(s.text)}</p>")
    parts.extend(f"<pre>{html.escape(p)}</pre>" for p in s.pre)
    parts.extend(_table(t) for t in s.tables)
    if s.links:
        parts.append(_links(s.links))
    parts.extend(_img(f) for f in s.figures)
    for strip in s.strips:
        parts.append(f"<div class='strip'><h3>{html.escape(strip.title)}</h3>")
        if strip.text:
            parts.append(f"<p>{html.escape(strip.text)}</p>")
        parts.extend(_img(f) for f in strip.figures)
        parts.append("</div>")
    parts.append("</section>")
    return parts


def _links(links: list[Any]) -> str:
    """``<ul class='reports'>`` of links (objects with ``href``, ``text`` and ``detail``)."""
    items = "".join(f"<li><a class='report' href='{html.escape(k.href)}'>{html.escape(k.text)}</a>"
                    + (f" — {html.escape(k.detail)}" if k.detail else "") + "</li>" for k in links)  # fmt: skip
    return f"<ul class='reports'>{items}</ul>"


def write_page(path: Path, title: str, intro: str, sections: list[Section], *, links: list[Any] | None = None) -> Path:
    """Write ``path``: one HTML file with every figure embedded (it works when moved alone); ``links``
    (default none: objects with ``href``, ``text``, ``detail``) are listed right under the intro."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]  # fmt: skip
    if links:
        parts.append(_links(links))
    for s in sections:
        parts.extend(_section(s))
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
