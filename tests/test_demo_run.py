"""`convscope demo` end to end (quick mode, cached weights): files, sizes, and what the page says.

The demo runs once per module; the page tests read its ``index.html`` like a user would: every
attribution panel names its target class and probability, every empty or near-empty map says why,
the galleries name their objective, and no project-internal jargon reaches the page. The page is the
HTML report of the Keras model (the report's CSP, navigation and layers) with the demo's sections, and
opens in a real browser from ``file://`` with every network request aborted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import test_report
from convscope.demo.attribution import CAM_LAYERS, WEAK
from convscope.demo.data import as_nchw
from convscope.demo.run import STEPS, run_demo

browser = test_report.browser  # chromium through Playwright, shared with the report's browser tests


@dataclass
class PageFigure:
    """One ``<figure>``: its attributes, caption text (``label``), note, linked PNG (``href``) and img srcs."""

    attrs: dict[str, str]
    label: str = ""
    note: str = ""
    href: str = ""
    srcs: list[str] = field(default_factory=list)


VOID = {"img", "meta", "br", "input", "link", "hr", "source", "wbr"}


class Page(HTMLParser):
    """The page's visible text (data URIs excluded), its figures, headings, links and meta tags."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.figures: list[PageFigure] = []
        self.headings: list[str] = []
        self.links: list[dict[str, str]] = []
        self.metas: list[dict[str, str]] = []
        self.nav: list[str] = []
        self.ids: list[str] = []
        self._tags: list[tuple[str, dict[str, str]]] = []

    def _inside(self, tag: str) -> bool:
        return any(t == tag for t, _ in self._tags)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "figure":
            self.figures.append(PageFigure(a))
        elif tag == "a":
            self.links.append(a)
            if self._inside("nav"):
                self.nav.append(a.get("href", ""))
            if self._inside("figure") and "file" in a.get("class", "").split():
                self.figures[-1].href = a.get("href", "")
        elif tag == "img":
            self.text.append(a.get("alt", ""))
            if self._inside("figure"):
                self.figures[-1].srcs.append(a.get("src", ""))
        elif tag == "meta":
            self.metas.append(a)
        elif tag in ("h2", "h3"):
            self.headings.append("")
        if tag not in VOID:
            self._tags.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        while self._tags:
            if self._tags.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        top, attrs = self._tags[-1] if self._tags else ("", {})
        if top in ("style", "title", "script"):
            return
        data = data.replace("\N{NO-BREAK SPACE}", " ")
        self.text.append(data)
        if top in ("h2", "h3"):
            self.headings[-1] += data
        if top == "figcaption":  # the caption is the figcaption's own text
            self.figures[-1].label += data
        elif top == "span" and "note" in attrs.get("class", "").split() and self._inside("figcaption"):
            self.figures[-1].note += data


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory, digit_twins_cache: Path) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    index = run_demo(out, quick=True, cache_dir=digit_twins_cache)
    assert index == out / "index.html"
    return out


@pytest.fixture(scope="module")
def page(demo_out: Path) -> Page:
    parsed = Page()
    parsed.feed((demo_out / "index.html").read_text(encoding="utf-8"))
    return parsed


def attribution_panels(page: Page, stem: str = "") -> list[PageFigure]:
    return [f for f in page.figures if f.attrs.get("class") == "attribution" and f.href.startswith(stem)]


def test_demo_writes_every_figure_and_a_self_contained_page(demo_out: Path) -> None:
    out = demo_out
    for fw in ("keras", "torch"):
        # 32 maps of 26x26 as 4 rows x 8 cols; 64 maps of 24x24 as 8x8 (x2 upscale, 1 px gaps)
        assert Image.open(out / f"maps_{fw}_conv_0.png").size == (8 * 52 + 7, 4 * 52 + 3)
        assert Image.open(out / f"maps_{fw}_conv_1.png").size == (8 * 48 + 7, 8 * 48 + 7)
        assert (out / f"filters_{fw}_conv_0.png").exists()
        assert (out / f"maximize_{fw}_classes.png").exists() and (out / f"maximize_{fw}_conv_1_15.png").exists()
        for i in range(8):
            assert Image.open(out / f"attr_{fw}_gradcam_{i}.png").size == (112, 112)  # 28x28, x4
        summary = (out / f"summary_{fw}.txt").read_text()
        assert "Total params: 1,199,882" in summary  # the classic Keras MNIST ConvNet's parameter count
    assert Image.open(out / "vgg16_block1_conv1_filters.png").mode == "RGB"  # colour first-layer kernels
    page = (out / "index.html").read_text()
    parsed = Page()
    parsed.feed(page)
    pngs = sorted(p.name for p in out.glob("*.png"))
    shown = sorted(f.href for f in parsed.figures if f.href)
    assert shown == pngs  # every PNG is one figure of the page, linked under it ...
    for f in parsed.figures:  # ... and embedded, like every other picture: the page works when moved alone
        assert f.srcs and all(s.startswith("data:image/png;base64,") for s in f.srcs), (f.href, f.label)
    assert not (out / "index_assets").exists()
    assert "hold-out accuracy" in page


#: index.html: the digit report (under 2 MB, as report_torch.html) plus the demo's own pictures.
INDEX_BYTES = 3_000_000

LABEL = re.compile(r"target (\d+) · p (?:= ([\d.]+)%|> 99\.9%)")


def test_every_attribution_panel_names_its_target_and_probability(page: Page) -> None:
    panels = attribution_panels(page)
    assert len(panels) == 2 * 2 * 8 + 2  # two methods x two digit models x 8 digits, two VGG16 panels
    for panel in panels:
        match = LABEL.search(panel.label)
        assert match, f"panel {panel.href} is labelled {panel.label!r}"
        assert int(match.group(1)) == int(panel.attrs["data-target"])
        p = float(panel.attrs["data-probability"])
        assert p > 0.999 if match.group(2) is None else abs(float(match.group(2)) / 100 - p) < 0.0006


def test_digit_labels_are_the_models_own_prediction_and_probability(page: Page, digit_twins: Any) -> None:
    x = torch.from_numpy(as_nchw(digit_twins.split.x_test[:8]))
    with torch.no_grad():
        probs = digit_twins.torch_model(x).numpy()  # ends in nn.Softmax: probabilities
    panels = attribution_panels(page, "attr_torch_gradcam_")
    assert [int(p.attrs["data-target"]) for p in panels] == probs.argmax(1).tolist()
    shown = np.array([float(p.attrs["data-probability"]) for p in panels])
    np.testing.assert_allclose(shown, probs.max(1), atol=1e-5)


def torch_gradcam_peaks(model: Any, x: torch.Tensor, layer_output: str) -> np.ndarray:
    """Grad-CAM by hand on the PyTorch digit net at ``relu_1`` (target = predicted class): peak per map."""
    assert layer_output == "relu_1"
    with torch.no_grad():
        a = torch.relu(model.conv_1(torch.relu(model.conv_0(x))))
    a.requires_grad_(True)
    logits = model.predictions(torch.relu(model.dense_0(model.flatten(model.pool(a)))))
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    assert a.grad is not None
    cam = (a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1).clamp(min=0)
    return cam.detach().flatten(1).amax(dim=1).numpy()


def test_empty_and_near_empty_maps_say_why(page: Page, digit_twins: Any) -> None:
    for panel in attribution_panels(page):
        kind = panel.attrs["data-empty"]
        if kind:
            assert "empty" in panel.note and " — " in panel.note, (panel.href, kind, panel.note)
        else:
            assert not panel.note
    # Independently: Grad-CAM by hand on the PyTorch net; maps with no positive value, or a peak far below
    # the row's, must carry the explanation (today's digit 6, whose map is ~2% of its neighbours').
    x = torch.from_numpy(as_nchw(digit_twins.split.x_test[:8]))
    peaks = torch_gradcam_peaks(digit_twins.torch_model, x, CAM_LAYERS["torch"])
    panels = attribution_panels(page, "attr_torch_gradcam_")
    for i in np.where((peaks <= 0) | (peaks < WEAK * np.median(peaks)))[0]:
        assert panels[i].note.startswith(("empty: no positive evidence for class", "near-empty:")), panels[i].note
        assert f"at {CAM_LAYERS['torch']}" in panels[i].note


def test_digit_gradcam_strips_are_informative(page: Page) -> None:
    # Same architecture, init and optimiser in both frameworks: at most one of the 8 shown maps empty or
    # near-empty per digit model (PyTorch's default init left 2 of 8 empty at relu_1), each explained.
    for fw in ("keras", "torch"):
        panels = attribution_panels(page, f"attr_{fw}_gradcam_")
        assert len(panels) == 8
        empty = [p for p in panels if p.attrs["data-empty"]]
        assert len(empty) <= 1, [(p.href, p.note) for p in empty]
        assert all(p.note for p in empty)


def test_gradcam_rows_name_their_layer(page: Page) -> None:
    for fw, name in (("keras", "Keras"), ("torch", "PyTorch")):
        assert any(h.startswith(f"{name} · Grad-CAM at {CAM_LAYERS[fw]},") for h in page.headings), page.headings
    assert any("Which layer Grad-CAM should read" in t for t in page.text)


def test_maximisation_galleries_name_their_objective(page: Page) -> None:
    by_file = {f.href: f.label for f in page.figures}
    for fw, name in (("keras", "Keras"), ("torch", "PyTorch")):
        assert any(h.startswith(f"{name} · channel objective: mean of channel k of") and "default recipe" in h
                   for h in page.headings), page.headings  # fmt: skip
        assert "neuron objective" in by_file[f"maximize_{fw}_conv_1_neuron.png"]
        assert "channel objective" not in by_file[f"maximize_{fw}_conv_1_neuron.png"]


def test_every_flat_channel_tile_says_why(demo_out: Path, page: Page) -> None:
    tiles = [f for f in page.figures if f.attrs.get("class") == "tile"]
    assert sorted(f.href for f in tiles) == sorted(f"maximize_{fw}_conv_1_{c}.png" for fw in ("keras", "torch")
                                                   for c in range(16))  # fmt: skip
    for tile in tiles:
        pixels = np.asarray(Image.open(demo_out / tile.href).convert("L"), dtype=np.int16)
        ends = ((pixels <= 2) | (pixels >= 253)).mean()
        if pixels.max() - pixels.min() <= 2 or ends >= 0.7:  # uniform, or mostly black/white: no pattern
            assert tile.note.startswith(("saturated", "still", "flat")), (tile.href, tile.note)
        if tile.note.startswith("saturated"):
            assert "the objective grows with overall brightness" in tile.note
        assert tile.attrs["data-flat"] == tile.note.split(" ")[0].rstrip(":")  or not tile.note


def test_reports_are_written_linked_small_and_offline(demo_out: Path, page: Page) -> None:
    # index.html is the Keras model's report (with the demo's sections); report_torch.html the PyTorch one's
    assert {"href": "report_torch.html", "class": "link"} in page.links
    assert not (demo_out / "report_keras.html").exists()
    for report, limit in ((demo_out / "index.html", INDEX_BYTES), (demo_out / "report_torch.html", 2_000_000)):
        assert report.stat().st_size < limit
        text = report.read_text(encoding="utf-8")
        assert not re.search(r"(?:src|href)\s*=\s*['\"]?(?:https?:)?//", text)  # no network reference
        assert "http://" not in text and "https://" not in text
        assert "dataset top-9 of 1797 images" in text  # the demo's scan reached the report
    own = sum(len(src) for f in page.figures if f.href for src in f.srcs)  # the demo's pictures, embedded
    assert 0 < (demo_out / "index.html").stat().st_size - own < 2_000_000  # the Keras digit report itself


def test_progress_is_one_line_per_step_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from convscope.reporting import Section

    steps = [(name, lambda out, state, n=name: Section(n)) for name in ("first", "second")]
    run_demo(tmp_path, steps=steps)
    err = capsys.readouterr().err
    assert re.fullmatch(r"convscope demo: 1/2 first \(\d+\.\d s\)\nconvscope demo: 2/2 second \(\d+\.\d s\)\n", err), err
    assert not any(c in err for c in "\r█▏▎▍▌▋▊▉")


def test_page_has_no_internal_jargon(page: Page) -> None:
    text = " ".join(page.text).lower()
    assert "hold-out accuracy" in text  # the parser did read the page
    for word in ("twin", "seed", "tutorial"):
        assert word not in text, f"{word!r} in: ...{text[max(0, text.find(word) - 80):text.find(word) + 80]}..."


def test_dataset_examples_section_shows_16_channels_per_model(demo_out: Path, page: Page) -> None:
    assert "Dataset examples" in page.headings
    for fw in ("keras", "torch"):
        panels = [f for f in page.figures if f.attrs.get("class") == "examples" and f.attrs.get("data-model") == fw]
        assert [f.attrs["data-channel"] for f in panels] == [str(c) for c in range(16)]
        assert all("top 9 of 1797 digits" in f.label for f in panels)
        assert all(len(re.findall(r"\d", f.label.split("(digits ")[1].split(",  max")[0])) >= 9 for f in panels)
        picture = Image.open(demo_out / f"examples_{fw}_conv_1_0.png")
        assert picture.width > 3 * picture.height  # images, patches, histogram (and visualisation) side by side


def test_index_is_the_keras_models_report(demo_out: Path, page: Page) -> None:
    csp = [m["content"] for m in page.metas if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'")  # the report's policy: no fetch of any kind
    layers = [h for h in page.nav if h.startswith("#layer-")]
    assert layers == ["#layer-conv_0", "#layer-conv_1", "#layer-dense_0", "#layer-predictions"]
    sections = [h for h in page.nav if h.startswith("#section-")]
    assert len(sections) == sum(1 for name, _ in STEPS if name != "page")  # every step's section, in the nav
    assert all(h[1:] in page.ids for h in sections + layers)
    for title in ("Training", "Model summaries", "Feature maps", "Dataset examples", "Attribution panels"):
        assert title in page.headings
    layers_heading = max(i for i, h in enumerate(page.headings) if h.strip() == "Layers")  # main's, after the nav's
    assert page.headings.index("Training") < layers_heading  # the demo's sections come before the layers
    text = " ".join(page.text)
    assert "conv_1 channel" in text and "dataset top 9" in text and "deletion AUC" in text  # the report's parts


def test_there_is_one_html_writer() -> None:
    import convscope.demo.page as demo_page

    for name in ("write_page", "Figure", "Strip", "Section", "Table"):
        assert not hasattr(demo_page, name), name
    demo = Path(demo_page.__file__).parent
    for source in demo.glob("*.py"):
        code = source.read_text(encoding="utf-8").lower()
        assert not re.search(r"<!doctype|<html|<figure|<section|<img", code), source.name  # no HTML built here


def test_index_opens_offline_in_a_browser(browser: Any, demo_out: Path) -> None:
    tab, errors, outside = test_report.open_page(browser, demo_out / "index.html")
    test_report.wait_until(tab, "Array.from(document.images).every(i => i.complete)")
    assert tab.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).length") == 0
    tab.click("nav a[href='#section-dataset-examples']")
    assert tab.evaluate("document.getElementById('section-dataset-examples').getBoundingClientRect().top") < 50
    tab.click("nav a[href='#layer-conv_1']")
    assert tab.evaluate("document.getElementById('layer-conv_1').open")
    assert errors == [] and outside == []
    tab.close()
