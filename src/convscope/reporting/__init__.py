"""``cs.report``: the whole model on one self-contained HTML page (a frozen explorer).

Example::

    import convscope as cs
    scope = cs.Scope(model, input_shape=(3, 224, 224))
    cs.report(scope, ["cat.jpg", "dog.jpg"], out="report.html", methods=("gradcam", "saliency"))

Add your own titled sections (text, tables, pictures — shown in the report's style and listed in its
navigation)::

    from convscope.reporting import Section
    cs.report(scope, images, out="report.html", intro="Six epochs on 1,437 digits.",
              sections=[Section("Training", "hold-out accuracy 98.1%")])

The page model is :mod:`convscope.reporting.model` (shared with the explorer); :mod:`convscope.reporting.html`
writes it; :mod:`convscope.reporting.sections` holds the caller's sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convscope.reporting.html import INLINE_BYTES, Written, write_html
from convscope.reporting.model import Page, PictureRef, build_page
from convscope.reporting.sections import Group, Link, Section, Table

__all__ = ["Group", "Link", "Page", "PictureRef", "Section", "Table", "Written", "build_page", "report", "write_html"]


def report(
    scope: Any,
    inputs: Any,
    out: str | Path = "report.html",
    *,
    scan: Any = None,
    layers: Any = None,
    methods: Sequence[str] = ("gradcam",),
    maximize: bool = False,
    labels: Any = None,
    targets: Sequence[int] | None = None,
    sanity: bool = False,
    metric_steps: int = 20,
    maximize_steps: int = 128,
    inline_bytes: int = INLINE_BYTES,
    title: str | None = None,
    intro: str = "",
    links: Sequence[Link] | None = (),
    sections: Sequence[Section] | Section | None = (),
    progress: bool | None = True,
) -> Written:
    """Write one HTML report of ``scope`` on ``inputs`` (an image or a list) to ``out``; returns :class:`Written`
    (``.path``, ``.assets``, ``.total_bytes``).

    Defaults: ``out="report.html"``; ``scan=None`` (a :class:`convscope.Scan` adds dataset examples);
    ``layers=None`` (every conv and dense layer; any layer query otherwise); ``methods=("gradcam",)``
    (attribution methods, ``()`` for none); ``maximize=False`` (feature visualisations of each layer's top
    channels, ``maximize_steps=128`` steps); ``labels=None`` (class names: a list or a file, one per line);
    ``targets=None`` (each image's top-1 class, or class indices); ``sanity=False`` (run
    ``Scope.sanity_check`` per method); ``metric_steps=20`` (deletion/insertion steps);
    ``inline_bytes`` (6 MB: embedded pictures beyond it go to ``<stem>_assets/`` beside the page);
    ``title=None`` (``"convscope report · <model name>"``); ``intro=""`` (a paragraph under the title);
    ``links=()`` (:class:`Link` objects: files beside the page, listed under the intro); ``sections=()``
    (your own :class:`Section` objects — text, preformatted blocks, tables, links, pictures with notes — shown
    after the header in the report's style and listed in its navigation; one Section alone is a one-item
    list, ``None`` none); ``progress=True`` (or ``None``; on stderr: a bar on a terminal, else one line per
    job — forward pass, feature visualisations, each attribution method, drawing the pictures; ``False``:
    silent).

    Every argument is checked before any model work (an :class:`~convscope.errors.OptionError` saying what
    to pass): ``scope`` must be a :class:`convscope.Scope` (not a bare model), ``out`` an ``.html``/``.htm``
    file (not a directory), ``sections``/``links`` :class:`Section`/:class:`Link` objects whose picture keys
    are unique.

    The page makes no network request and opens from ``file://``.

    Example: ``cs.report(scope, "digit.png", out="digit.html", layers="conv*", methods=(),
    sections=[Section("Notes", "trained for six epochs")])``.
    """
    from convscope.reporting.checks import check_count, check_out
    from convscope.reporting.progress import Steps

    path = check_out(out)  # before any model work, as build_page checks everything else
    check_count("inline_bytes", inline_bytes, minimum=0, example=INLINE_BYTES)
    steps = Steps(progress)
    steps.add(1)  # drawing the pictures, the last job
    try:
        page = build_page(scope, inputs, layers=layers, methods=methods, targets=targets, maximize=maximize,
                          scan=scan, labels=labels, sanity=sanity, metric_steps=metric_steps,
                          maximize_steps=maximize_steps, title=title, intro=intro, links=links,
                          sections=sections, progress=steps)  # fmt: skip
        with steps.job(f"drawing {len(page.pictures())} pictures into {path.name}"):
            return write_html(page, path, inline_bytes=inline_bytes)
    finally:
        steps.close()
