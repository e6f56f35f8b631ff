"""A self-contained HTML page (images embedded as data URIs) from titled sections."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figcaption{font-size:.85rem;color:#555;max-width:520px}
img{image-rendering:pixelated;max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.75rem;overflow-x:auto;font-size:.8rem}
"""


@dataclass
class Figure:
    """One picture: PNG bytes on disk (``file``, relative to the page) plus a caption."""

    file: Path
    caption: str
    width: int | None = None


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    pre: list[str] = field(default_factory=list)


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.file.read_bytes()).decode("ascii")
    width = f" width='{fig.width}'" if fig.width else ""
    return (
        f"<figure><img alt='{html.escape(fig.caption)}' src='data:image/png;base64,{data}'{width}>"
        f"<figcaption>{html.escape(fig.caption)} <a href='{html.escape(fig.file.name)}'>png</a>"
        "</figcaption></figure>"
    )


def write_page(path: Path, title: str, intro: str, sections: list[Section]) -> Path:
    """Write ``path``: one HTML file with every figure embedded (it works when moved alone)."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]  # fmt: skip
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        parts.extend(f"<pre>{html.escape(p)}</pre>" for p in s.pre)
        parts.extend(_img(f) for f in s.figures)
        parts.append("</section>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
