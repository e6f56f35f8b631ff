"""The page model shared by the HTML report and the live explorer: plain dataclasses built from result objects.

The report is a frozen explorer: both show the same :class:`Page`. :func:`build_page` fills it by calling
only the library's public results — ``Scope.summary``, ``Scope.predict``, ``Scope.activations`` (one pass
for all images), ``FeatureMaps.grid``, ``Scope.filters``, ``Scope.maximize_layer``, ``Scope.attribute``,
``cs.metrics.deletion``/``insertion``, ``Scope.sanity_check`` and ``Scan.top``/``.patches``/``.stats``.
Nothing here computes model facts of its own: rankings and value ranges are read off the arrays those
results hold (channel mean, min, max), and pictures are the results' own renderings.

Pictures are :class:`PictureRef` objects — a stable ``key``, a ``caption`` (normalisation and value range)
and ``alt`` text built from facts — rendered lazily by :meth:`PictureRef.image` (then cached), so a live
app can build the page cheaply and draw only what is asked for. Layout of the model::

    Page
      header:  model_name, framework, summary (rows, totals), preprocessing, versions
      images:  [ImageView(index, name, picture, predictions=[Prediction(rank, index, name, probability)])]
      layers:  [LayerSection(info=LayerInfo(name, type, output_shape, params, channels, kind),
                             kernels, features, views=[LayerView per image])]
               LayerView: ranking (every ChannelStat, best mean first), top (top-16 TileRefs, each a
               PictureRef plus its ChannelStat), mosaic (all channels, ONE picture), strip (vector
               layers), notice (dead/flat layer, in the library's words), dataset (scan examples)
      attributions: [AttributionView(image_index, method, target, pictures input | map | overlay,
                     deletion_auc, insertion_auc, sanity)]
      intro, links, sections: the caller's own text, links and titled sections
               (:mod:`convscope.reporting.sections`), shown after the header and listed in the navigation

Example::

    page = build_page(scope, ["cat.jpg", "dog.jpg"], layers="conv*", methods=("gradcam",))
    page.layers[0].views[1].top[0].stat        # ChannelStat(channel=41, rank=1, mean=0.82, ...)
    page.layers[0].views[1].mosaic.image()     # PIL image of every channel, rendered on first use
    page.layer("conv_1").info.output_shape     # "(None, 64, 26, 26)"
"""

from __future__ import annotations

import contextlib
import re
import reprlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from convscope.errors import InputError, LayerNotFoundError, OptionError

if TYPE_CHECKING:
    from convscope.reporting.sections import Link, Section

TOP = 16
"""Channels shown per layer and image (best mean activation first)."""


_ATTR = re.compile(r"[a-z][a-z0-9-]*")
_CLASS = re.compile(r"[A-Za-z][A-Za-z0-9_-]*( [A-Za-z][A-Za-z0-9_-]*)*")


@dataclass
class PictureRef:
    """One picture of the page: ``key`` (unique, stable: ``"layer/conv_1/image/0/mosaic"``), ``caption``
    (states normalisation and value range), ``alt`` (facts: ``"conv_1 channel 41, rank 3 of 64, mean 0.82"``)
    and ``render`` (a no-argument callable giving the PIL image; :meth:`image` calls it once and caches).

    Optional, for pictures of the caller's own sections: ``note`` (a second line under the caption, e.g.
    why a map is empty; default none), ``kind`` (CSS classes of its ``<figure>``, e.g. ``"attribution"``),
    ``data`` (facts as ``data-*`` attributes of the ``<figure>``: lower-case names) and ``file`` (a
    full-size copy beside the page, linked as "png" under the picture; default none)."""

    key: str
    caption: str
    alt: str
    render: Callable[[], Image.Image] = field(repr=False)
    _cached: Image.Image | None = field(default=None, repr=False)
    note: str = ""
    kind: str = ""
    data: dict[str, str] = field(default_factory=dict)
    file: str | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse fields of the wrong type (an :class:`OptionError` naming the field); run again by
        ``cs.report`` on the caller's pictures, before any model work."""
        if not isinstance(self.key, str) or not self.key:
            raise OptionError(f"PictureRef key={shown(self.key)} is not allowed; pass a non-empty str, e.g. "
                              "PictureRef.of('section/loss', image, 'loss per epoch')")  # fmt: skip
        for name in ("caption", "alt", "note", "kind"):
            if not isinstance(getattr(self, name), str):
                raise OptionError(f"picture {self.key!r}: {name}={shown(getattr(self, name))} is not allowed; pass a str")
        if not callable(self.render):
            raise OptionError(f"picture {self.key!r}: render={shown(self.render)} is not allowed; pass a no-argument "
                              "callable giving a PIL image, or build it with PictureRef.of(key, image, caption)")  # fmt: skip
        if self.file is not None and not isinstance(self.file, str):
            if not isinstance(self.file, Path):
                raise OptionError(f"picture {self.key!r}: file={shown(self.file)} is not allowed; pass None or the "
                                  "relative path (a str) of a copy beside the page, e.g. file='loss.png'")  # fmt: skip
            self.file = self.file.as_posix()
        if self.kind and not _CLASS.fullmatch(self.kind):
            raise OptionError(f"picture {self.key!r}: kind={self.kind!r} is not a list of CSS class names; pass "
                              "e.g. kind='attribution'")  # fmt: skip
        if self.data is None:
            self.data = {}
        if not isinstance(self.data, dict):
            raise OptionError(f"picture {self.key!r}: data={shown(self.data)} is not allowed; pass a dict of "
                              "data-* facts, e.g. data={'target': '3'}")  # fmt: skip
        for name, value in list(self.data.items()):
            if not isinstance(name, str) or not _ATTR.fullmatch(name):
                raise OptionError(f"picture {self.key!r}: data key {name!r} is not a data-* attribute name; use "
                                  "lower-case letters, digits and '-', e.g. 'target'")  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise OptionError(f"picture {self.key!r}: data[{name!r}]={shown(value)} is not allowed; pass a "
                                  "str (or a number)")  # fmt: skip
            if not isinstance(value, str):
                self.data[name] = str(value)

    @classmethod
    def of(cls, key: str, image: Any, caption: str, *, alt: str | None = None, **extra: Any) -> PictureRef:
        """A picture of an image already drawn; ``alt`` defaults to ``caption``; ``extra``: ``note``,
        ``kind``, ``data``, ``file``. Example: ``PictureRef.of("section/loss", img, "loss per epoch")``.

        ``image``: a PIL image, a uint8 numpy array (H×W, or H×W×C with 1, 3 or 4 channels) or the path
        (str or :class:`~pathlib.Path`) of an image file, read now."""
        unknown = sorted(set(extra) - set(EXTRA))
        if unknown:
            raise OptionError(f"PictureRef.of({key!r}, ...): unknown keyword {', '.join(map(repr, unknown))}; "
                              f"allowed: alt, {', '.join(EXTRA)}")  # fmt: skip
        if not isinstance(caption, str):
            raise OptionError(f"PictureRef.of({key!r}, image, caption={shown(caption)}): caption must be a str, e.g. "
                              "'loss per epoch'")  # fmt: skip
        img = as_image(key, image)
        return cls(key, caption, caption if alt is None else alt, lambda: img, img, **extra)

    def image(self) -> Image.Image:
        if self._cached is None:
            self._cached = self.render()
        return self._cached


EXTRA = ("note", "kind", "data", "file")
"""The optional keywords of :meth:`PictureRef.of`."""


def shown(value: Any) -> str:
    """``value`` for a message: its type and a short repr."""
    return f"{reprlib.repr(value)} (a {type(value).__name__})"


def as_image(key: str, image: Any) -> Image.Image:
    """``image`` (a PIL image, uint8 array or image path) as a PIL image, or an error naming what is allowed."""
    import numpy as np

    allowed = "a PIL.Image.Image, a uint8 numpy array (H×W or H×W×C, C = 1, 3 or 4) or an image path"
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"PictureRef.of({key!r}, {str(image)!r}, ...): no such image file; pass {allowed}")
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(f"PictureRef.of({key!r}, {str(image)!r}, ...): not an image file PIL can read "
                             f"({type(exc).__name__}); pass {allowed}") from None  # fmt: skip
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise OptionError(f"PictureRef.of({key!r}, array, ...): a {image.dtype} array is not allowed; pass a uint8 "
                              "array (0–255), e.g. (a * 255).clip(0, 255).astype(np.uint8) for values in [0, 1], "
                              "or a PIL.Image.Image")  # fmt: skip
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4)):
            if 0 in image.shape:
                raise OptionError(f"PictureRef.of({key!r}, array, ...): an empty {image.shape} array; pass {allowed}")
            return Image.fromarray(np.ascontiguousarray(image))
        raise OptionError(f"PictureRef.of({key!r}, array, ...): shape {image.shape} is not allowed; pass {allowed} "
                          "(channels last)")  # fmt: skip
    raise OptionError(f"PictureRef.of({key!r}, image, ...): image={shown(image)} is not allowed; pass {allowed}")


@dataclass(frozen=True)
class ChannelStat:
    """One channel of one layer for one image: ``rank`` 1 = highest ``mean`` activation; ``low``/``high``
    are the channel's minimum and maximum."""

    channel: int
    rank: int
    mean: float
    low: float
    high: float


@dataclass
class TileRef:
    """A top channel's own picture plus its facts."""

    stat: ChannelStat
    picture: PictureRef


@dataclass(frozen=True)
class Prediction:
    """One of an image's top-k classes."""

    rank: int
    index: int
    name: str | None
    probability: float


@dataclass
class ImageView:
    """One input image: ``name`` (file name or ``"image N"``), its ``picture`` as the model sees it (after
    resizing, preprocessing undone) and its top-5 ``predictions`` (empty for a feature extractor)."""

    index: int
    name: str
    picture: PictureRef
    predictions: list[Prediction]


@dataclass(frozen=True)
class LayerInfo:
    """A layer's row of the summary. ``kind``: ``"spatial"`` (maps), ``"vector"`` (units) or ``"other"``."""

    name: str
    type: str
    output_shape: str
    params: int
    channels: int
    kind: str
    anchor: str


@dataclass
class DatasetExamples:
    """A scan's top images of one channel and their receptive-field patches."""

    channel: int
    images: PictureRef
    patches: PictureRef


@dataclass
class LayerView:
    """One layer for one image. ``ranking`` holds every channel, best mean first; ``top`` the first
    :data:`TOP` as tiles (spatial layers); ``mosaic`` every channel in one picture (spatial) and ``strip``
    the units of a vector layer; ``notice`` says when the layer is dead, flat or vanishing."""

    layer: str
    image_index: int
    ranking: list[ChannelStat]
    top: list[TileRef]
    mosaic: PictureRef | None
    strip: PictureRef | None
    notice: str | None
    dataset: list[DatasetExamples] = field(default_factory=list)
    top_caption: str = ""
    """The caption of the top tiles together: count, ordering, normalisation and value range."""


@dataclass
class LayerSection:
    """Everything about one layer: facts, kernels (conv layers), feature visualisations (when asked) and
    one :class:`LayerView` per image."""

    info: LayerInfo
    kernels: PictureRef | None
    features: PictureRef | None
    views: list[LayerView]


@dataclass
class AttributionView:
    """One image explained by one method for one target: pictures ``input | map | overlay`` and the
    library's faithfulness figures (deletion AUC: lower is better; insertion AUC: higher is better)."""

    image_index: int
    method: str
    target: int | None
    target_name: str | None
    layer: str | None
    pictures: list[PictureRef]
    deletion_auc: float
    insertion_auc: float
    sanity: str | None = None


@dataclass
class Page:
    """The whole page; see the module docstring for its layout."""

    title: str
    model_name: str
    framework: str
    summary: Any  # convscope.summary.ModelSummary
    preprocessing: dict[str, str]
    versions: dict[str, str]
    images: list[ImageView]
    layers: list[LayerSection]
    attributions: list[AttributionView]
    notes: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    """The caller's own titled sections, shown after the header (see :mod:`convscope.reporting.sections`)."""
    intro: str = ""
    """A paragraph under the title (default none)."""
    links: list[Link] = field(default_factory=list)
    """Files beside the page, listed under the intro (default none)."""

    def layer(self, name: str) -> LayerSection:
        for section in self.layers:
            if section.info.name == name:
                return section
        raise LayerNotFoundError(f"no layer {name!r} on this page; layers: {', '.join(s.info.name for s in self.layers)}")

    def pictures(self) -> list[PictureRef]:
        """Every picture in page order (header, sections, layers, attributions)."""
        out = [v.picture for v in self.images]
        for section in self.sections:
            out += section.all_pictures()
        for s in self.layers:
            out += [p for p in (s.kernels, s.features) if p is not None]
            for v in s.views:
                out += [t.picture for t in v.top] + [p for p in (v.mosaic, v.strip) if p is not None]
                for d in v.dataset:
                    out += [d.images, d.patches]
        for a in self.attributions:
            out += a.pictures
        return out


def versions() -> dict[str, str]:
    """convscope, torch and (when installed) keras versions, read without importing keras."""
    import torch

    from convscope import __version__

    out = {"convscope": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    with contextlib.suppress(metadata.PackageNotFoundError):
        out["keras"] = metadata.version("keras")
    return out


def image_names(inputs: Sequence[Any]) -> list[str]:
    return [Path(x).name if isinstance(x, str | Path) else f"image {i}" for i, x in enumerate(inputs)]


def as_list(inputs: Any) -> list[Any]:
    """One image or a list of them (paths, PIL images, uint8 arrays) as a list."""
    if isinstance(inputs, list | tuple):
        if not inputs:
            raise OptionError("inputs=[]: give at least one image (a path, PIL image or uint8 array)")
        return list(inputs)
    return [inputs]


def build_page(
    scope: Any,
    inputs: Any,
    *,
    layers: Any = None,
    methods: Sequence[str] = ("gradcam",),
    targets: Sequence[int] | None = None,
    maximize: bool = False,
    scan: Any = None,
    labels: Any = None,
    sanity: bool = False,
    metric_steps: int = 20,
    maximize_steps: int = 128,
    title: str | None = None,
    intro: str = "",
    links: Sequence[Link] | None = (),
    sections: Sequence[Section] | Section | None = (),
    progress: Any = False,
) -> Page:
    """Build the :class:`Page` for ``scope`` and ``inputs`` (one image or a list).

    ``layers=None`` shows every conv and dense layer (leaf layers with a 2-D or 4-D kernel), else any layer
    query; ``methods`` attribution methods (``()`` for none); ``targets`` class indices explained (default
    ``None``: each image's top-1 class); ``maximize`` adds feature visualisations of each layer's top
    channels for the first image (``maximize_steps`` steps); ``scan`` a :class:`convscope.Scan` for
    dataset examples; ``labels`` class names (list or file); ``sanity`` runs ``Scope.sanity_check`` per
    method; ``metric_steps`` the deletion/insertion steps (default 20); ``title`` (default
    ``"convscope report · <model name>"``); ``intro`` a paragraph under it and ``links`` files beside the
    page listed there (default none); ``sections`` the caller's own titled sections (default none);
    ``progress`` (default ``False``; ``True`` or ``None``: a bar on a terminal, else a line per job on
    stderr, or a :class:`~convscope.reporting.progress.Steps`).

    Every argument is checked before any model work: a wrong one is an :class:`OptionError` (e.g. a bare
    model instead of ``cs.Scope(model)``, ``maximize_steps=0``, a section that is not a
    :class:`~convscope.reporting.sections.Section`, two different section pictures with one key).
    """
    from convscope.reporting.checks import check_count, check_scope, check_targets, check_text
    from convscope.reporting.progress import Steps
    from convscope.reporting.sections import check_links, check_sections, with_anchors
    from convscope.reporting.views import attribution_views, image_views, layer_sections

    # every argument is checked before any model work
    check_scope(scope)
    methods = (methods,) if isinstance(methods, str) else methods
    if not isinstance(methods, Sequence) or not all(isinstance(m, str) for m in methods):
        raise OptionError(f"methods={methods!r} is not allowed; pass a list of attribution method names, e.g. "
                          "methods=('gradcam', 'saliency'), or () for none")  # fmt: skip
    check_count("maximize_steps", maximize_steps, example=128)
    check_count("metric_steps", metric_steps, example=20)
    targets = check_targets(targets)
    check_text("title", title, none=True)
    check_text("intro", intro)
    own_links = check_links(links)
    own_sections = check_sections(sections)
    steps = progress if isinstance(progress, Steps) else Steps(progress)

    items = as_list(inputs)
    names = image_names(items)
    summary = scope.summary()
    spec = scope.input_spec()
    pre = {k: ("default" if v is None else str(getattr(v, "value", v))) for k, v in scope.preprocessing().items()}
    pre |= {"layout": scope.layout.value, "input size": "×".join(map(str, spec.size)) if spec.size else "as given",
            "channels": str(spec.channels) if spec.channels else "as given"}  # fmt: skip
    steps.add(1 + len(methods) * len(targets or [None]))
    with steps.job(f"forward pass of {len(items)} image(s)"):
        images = image_views(scope, items, names, labels)
        layer_views = layer_sections(scope, items, summary, layers=layers, maximize=maximize, scan=scan,
                                     maximize_steps=maximize_steps, steps=steps)  # fmt: skip
    attributions = attribution_views(scope, items, images, methods=methods, targets=targets, sanity=sanity,
                                     steps=metric_steps, progress=steps)  # fmt: skip
    return Page(title or f"convscope report · {summary.model_name}", summary.model_name, scope.framework, summary,
                pre, versions(), images, layer_views, attributions, sections=with_anchors(own_sections),
                intro=intro, links=own_links)  # fmt: skip
