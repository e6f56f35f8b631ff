"""Write a :class:`~convscope.reporting.model.Page` as one self-contained HTML file.

Pictures become PNG data URIs in page order until ``inline_bytes`` is spent; later ones are written to a
folder beside the file (``report_assets/`` for ``report.html``) and linked relatively, so the page opens
from ``file://`` with no server and makes no network request (a Content-Security-Policy forbids any).
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from pathlib import Path

from convscope.reporting.model import Page
from convscope.reporting.templates import CSS, JS, PAGE
from convscope.reporting.views import shape_text

INLINE_BYTES = 6_000_000
"""Embedded picture bytes (base64) past which pictures go to the assets folder."""
SHOWN_PX = 480
"""Small pictures are shown enlarged (an integer factor, pixelated) to at least this width."""


@dataclass(frozen=True)
class Source:
    src: str
    width: int
    height: int
    shown: int
    lazy: bool


@dataclass(frozen=True)
class Written:
    """What :func:`write_html` wrote: the page, the assets folder (``None`` when everything is inline) and
    the total bytes of both."""

    path: Path
    assets: Path | None
    html_bytes: int
    asset_bytes: int
    pictures: int

    @property
    def total_bytes(self) -> int:
        return self.html_bytes + self.asset_bytes


def minimum_width(key: str) -> int:
    """Display width floor by picture kind: channel tiles 96 px, inputs and attribution maps 192, the rest 480
    (pictures of the caller's own sections are shown at their own size)."""
    if "/channel/" in key:
        return 96
    if key.startswith(("image/", "attribution/")):
        return 192
    return SHOWN_PX


def _shown(width: int, minimum: int) -> int:
    return width * max(1, minimum // max(width, 1)) if width < minimum else width


def encode(page: Page, out: Path, inline_bytes: int) -> tuple[dict[str, Source], Path | None, int]:
    """Render every picture once (pictures sharing a key are one picture); data URIs first, then files under
    ``<stem>_assets/``."""
    from convscope.render.grid import to_png_bytes

    assets = out.with_name(out.stem + "_assets")
    if assets.exists():
        shutil.rmtree(assets)
    sources: dict[str, Source] = {}
    own = {p.key for s in page.sections for p in s.all_pictures()}  # drawn for the page: their own size
    spent = written = 0
    for n, pic in enumerate(page.pictures()):
        if pic.key in sources:  # one key, one picture (e.g. a channel's dataset examples under two images)
            continue
        img = pic.image()
        png = to_png_bytes(img, compress_level=6)
        natural = "/channel/" in pic.key or pic.key in own  # tiles: the grid sizes them
        shown = 0 if natural else _shown(img.width, minimum_width(pic.key))
        size = 4 * ((len(png) + 2) // 3) + 22
        if spent + size <= inline_bytes:
            spent += size
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            sources[pic.key] = Source(uri, img.width, img.height, shown, False)
            continue
        assets.mkdir(parents=True, exist_ok=True)
        name = f"{n:05d}.png"
        (assets / name).write_bytes(png)
        written += len(png)
        sources[pic.key] = Source(f"{assets.name}/{name}", img.width, img.height, shown, True)
    return sources, (assets if written else None), written


def write_html(page: Page, out: str | Path, *, inline_bytes: int = INLINE_BYTES) -> Written:
    """Write ``page`` to ``out`` (pictures inline up to ``inline_bytes``, default 6 MB); returns :class:`Written`."""
    import jinja2

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sources, assets, asset_bytes = encode(page, path, inline_bytes)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(PAGE).render(page=page, src=sources, css=CSS, js=JS, shape=shape_text)
    path.write_text(text, encoding="utf-8")
    return Written(path, assets, path.stat().st_size, asset_bytes, len(sources))
