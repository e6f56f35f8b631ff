"""``cs.report`` / ``convscope report``: one self-contained HTML page, checked by parsing it and in a real browser.

Structure is read with ``html.parser``; the top-16 tiles are compared with an independent ranking of
``scope.activations`` by channel mean; every embedded picture must decode; the page must reference nothing
on the network; and Debian's chromium (through Playwright) must render it from ``file://`` with every
network request aborted.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

import convscope as cs
from convscope.demo.models import torch_digits_model

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip
VOID = {"img", "meta", "br", "input", "link", "hr", "source", "wbr"}
ALT = re.compile(r"^(?P<layer>\S+) channel (?P<c>\d+), rank (?P<r>\d+) of (?P<n>\d+), mean (?P<m>\S+)$")
RANGE = re.compile(r"\[-?[\d.]+(e[-+]?\d+)?, -?[\d.]+(e[-+]?\d+)?\]|0–255")


class Page(HTMLParser):
    """Every element's ancestry: images with their layer/view/figure, figure captions, layer sections."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str], int]] = []
        self.images: list[dict[str, Any]] = []
        self.captions: dict[int, str] = {}
        self.sections: list[dict[str, str]] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._figures = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "details" and "layer" in a.get("class", "").split():
            self.sections.append(a)
        if tag == "img":
            info = dict(a)
            for t, ta, n in reversed(self.stack):
                if t == "figure" and "figure" not in info:
                    info["figure"] = n
                if t == "div" and "view" in ta.get("class", "").split():
                    info.setdefault("view", ta["data-image"])
                if t == "details" and "data-layer" in ta:
                    info.setdefault("layer", ta["data-layer"])
            self.images.append(info)
        if tag in VOID:
            return
        n = 0
        if tag == "figure":
            self._figures += 1
            n = self._figures
        self.stack.append((tag, a, n))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            t, _, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1][0] == "figcaption":
            figure = next(n for t, _, n in reversed(self.stack) if t == "figure")
            self.captions[figure] = self.captions.get(figure, "") + data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def digit_scope() -> cs.Scope:
    torch.manual_seed(0)
    return cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28))


@pytest.fixture(scope="module")
def images() -> list[Any]:
    return [cs.sample_image("digit"), cs.sample_image("cat")]


@pytest.fixture(scope="module")
def digit_report(tmp_path_factory: pytest.TempPathFactory, digit_scope: cs.Scope, images: list[Any]) -> Any:
    out = tmp_path_factory.mktemp("report") / "digit.html"
    labels = [f"digit {d}" for d in range(10)]
    return cs.report(digit_scope, images, out=out, methods=("gradcam", "saliency"), labels=labels, sanity=True)


def test_one_section_per_layer_first_open(digit_report: Any) -> None:
    page = parse(digit_report.path)
    assert [s["data-layer"] for s in page.sections] == ["conv_0", "conv_1", "dense_0", "predictions"]
    assert ["open" in s for s in page.sections] == [True, False, False, False]
    nav = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith("#layer-")]
    assert nav == ["#" + s["id"] for s in page.sections]  # sticky navigation links every layer
    buttons = [a["data-image"] for t, a in page.tags if t == "button" and "data-image" in a]
    assert buttons == ["0", "1"]  # the image switcher


def test_top_tiles_match_an_independent_ranking(digit_report: Any, digit_scope: cs.Scope, images: list[Any]) -> None:
    page = parse(digit_report.path)
    acts = digit_scope.activations(images, layers=["conv_0", "conv_1"])
    for layer in ("conv_0", "conv_1"):
        t = acts[layer].tensor  # (N, C, H, W)
        for i in range(len(images)):
            means = t[i].double().mean(dim=(1, 2))
            expected = sorted(range(len(means)), key=lambda c: (-float(means[c]), c))[:16]
            tiles = [ALT.match(im["alt"]) for im in page.images if im.get("layer") == layer
                     and im.get("view") == str(i) and ALT.match(im["alt"])]  # fmt: skip
            assert [int(m["c"]) for m in tiles if m] == expected
            assert [int(m["r"]) for m in tiles if m] == list(range(1, 17))
            assert {int(m["n"]) for m in tiles if m} == {t.shape[1]}
            for m in tiles:
                assert m is not None and float(m["m"]) == pytest.approx(float(means[int(m["c"])]), rel=5e-3, abs=1e-6)
            mosaics = [im for im in page.images if im.get("layer") == layer and im.get("view") == str(i)
                       and ": all " in im["alt"]]  # fmt: skip
            assert len(mosaics) == 1  # every channel in ONE picture behind the toggle


def test_every_picture_decodes_and_states_normalisation_and_range(digit_report: Any) -> None:
    page = parse(digit_report.path)
    # 2 inputs + 2 spatial layers x 2 images x (16 tiles + 1 mosaic) + 2 kernels + 2 strips x 2 + 2 methods x 2 x 3
    assert len(page.images) == digit_report.pictures == 2 + 2 * 2 * 17 + 2 + 4 + 12
    for im in page.images:
        assert im["src"].startswith("data:image/png;base64,")
        pic = Image.open(io.BytesIO(base64.b64decode(im["src"].split(",", 1)[1])))
        pic.load()
        assert pic.size == (int(im["width"]), int(im["height"]))
        assert im["alt"].strip()
        caption = page.captions[im["figure"]]
        assert "normalis" in caption and RANGE.search(caption), caption
    alts = [im["alt"] for im in page.images]
    assert any(a.startswith("dense_0 units for image 1") for a in alts)  # vector layers: a strip
    assert any(a.startswith("conv_1 kernels") for a in alts)
    for method in ("gradcam", "saliency"):  # input | map | overlay per image and method
        for i in (0, 1):
            assert sum(a.startswith((f"{method} map for image {i}", f"{method} overlay for image {i}")) for a in alts) == 2
    text = digit_report.path.read_text(encoding="utf-8")
    assert len(re.findall(r"deletion AUC \d", text)) == 4 and len(re.findall(r"insertion AUC \d", text)) == 4
    assert "sanity check: " in text and "digit " in text  # verdict and label names


def test_no_network_references(digit_report: Any) -> None:
    text = digit_report.path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:|//)""", text, re.I)
    assert not re.search(r"<link\b|<script[^>]+src|<iframe|@import|url\(", text, re.I)
    assert "default-src 'none'" in text  # and a CSP that forbids any fetch


def test_digit_report_is_small(digit_report: Any) -> None:
    assert digit_report.assets is None
    assert digit_report.total_bytes < 2_000_000


def test_dead_layer_is_stated(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
    scope = cs.Scope(net, input_shape=(1, 8, 8))
    out = cs.report(scope, cs.sample_image("digit"), out=tmp_path / "dead.html", methods=())
    text = out.path.read_text(encoding="utf-8")
    assert "all 4 channels are zero for image 0 (a dead layer" in text


def test_assets_beside_the_page_past_the_budget(tmp_path: Path, digit_scope: cs.Scope) -> None:
    out = cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "r.html", methods=(), inline_bytes=20_000)
    assert out.assets == tmp_path / "r_assets" and out.asset_bytes > 0
    srcs = [im["src"] for im in parse(out.path).images]
    linked = [s for s in srcs if not s.startswith("data:")]
    assert linked and all(s.startswith("r_assets/") and (tmp_path / s).is_file() for s in linked)


def test_cli_end_to_end_keras(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from convscope.cli import main
    from convscope.demo.models import keras_digits_model

    model_path = tmp_path / "digits.keras"
    keras_digits_model(seed=0).save(model_path)
    digit = cs.sample_image("digit")  # a path
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(10)) + "\n", encoding="utf-8")
    out = tmp_path / "k.html"
    code = main(["report", str(model_path), str(digit), str(digit), "-o", str(out), "--layers", "conv*",
                 "--methods", "gradcam,saliency", "--labels", str(labels)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert f"report written: {out}" in capsys.readouterr().out
    page = parse(out)
    assert [s["data-layer"] for s in page.sections] == ["conv_0", "conv_1"]
    assert "class " in out.read_text(encoding="utf-8")
    assert main(["report", str(model_path), str(digit), "-o", str(out), "--methods", "gradcm"]) == 2
    assert "'gradcam'" in capsys.readouterr().err  # one line naming the closest method


# -- a real browser ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Any:
    missing = not Path(CHROMIUM).exists() or shutil.which("chromium") is None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail("browser tests need playwright and Debian's chromium in CI")
        pytest.skip("chromium or playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


def open_page(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """Open ``path`` from file:// with every non-file request aborted; returns (page, errors, outside requests)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    outside: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, errors, outside


def wait_until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` from Python until it is true: Playwright's wait-for-function polls with an
    ``eval`` inside the page, which the report's Content-Security-Policy (no 'unsafe-eval') refuses."""
    import time

    end = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        page.wait_for_timeout(50)


def test_browser_renders_from_file_with_network_aborted(browser: Any, digit_report: Any) -> None:
    page, errors, outside = open_page(browser, digit_report.path)
    wait_until(page, "Array.from(document.images).every(i => i.complete)")
    assert page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).length") == 0
    assert page.evaluate("document.images.length") == digit_report.pictures
    assert not page.evaluate("document.getElementById('layer-conv_1').open")
    page.click("nav a[href='#layer-conv_1']")
    assert page.evaluate("document.getElementById('layer-conv_1').open")
    page.click("nav a[href='#layer-predictions']")
    assert page.evaluate("document.getElementById('layer-predictions').open")
    first = "#layer-conv_0 .view[data-image='0']"
    second = "#layer-conv_0 .view[data-image='1']"
    assert page.is_visible(first) and not page.is_visible(second)
    page.click(".switch button[data-image='1']")
    assert page.is_visible(second) and not page.is_visible(first)
    assert page.get_attribute(".switch button[data-image='1']", "aria-pressed") == "true"
    paint = page.evaluate("performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)")
    assert paint and paint[0] < 2000
    assert errors == [] and outside == []
    page.close()


def test_browser_loads_assets_beside_the_page(browser: Any, tmp_path: Path, digit_scope: cs.Scope) -> None:
    out = cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "a.html", methods=("gradcam",),
                    inline_bytes=0)  # fmt: skip
    page, errors, outside = open_page(browser, out.path)
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true);"
                  "document.querySelectorAll('img').forEach(i => i.loading = 'eager')")  # fmt: skip
    wait_until(page, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert errors == [] and outside == []
    page.close()


def test_scan_examples_and_feature_visualisations(tmp_path: Path, digit_scope: cs.Scope) -> None:
    import numpy as np

    data = np.random.default_rng(0).integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    scan = digit_scope.scan(data, layers="conv_1", k=9, progress=False)
    out = cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "s.html", layers=["conv_0", "conv_1"],
                    methods=(), scan=scan, maximize=True, maximize_steps=4)  # fmt: skip
    page = parse(out.path)
    alts = [im["alt"] for im in page.images]
    top = [int(m["c"]) for m in (ALT.match(a) for a in alts) if m and m["layer"] == "conv_1"]
    for c in top[:4]:  # dataset top-9 and their patches for the image's 4 best channels
        assert f"conv_1 channel {c}: dataset top 9, best value {scan.top('conv_1', c).values[0]:.3g}" in alts
        assert f"conv_1 channel {c}: receptive-field patches of the dataset top 9" in alts
    assert not any(a.startswith("conv_0 channel") and "dataset" in a for a in alts)  # conv_0 was not scanned
    assert sum(a.startswith(f"{layer} feature visualisations") for a in alts for layer in ("conv_0", "conv_1")) == 2
    for im in page.images:
        assert "normalis" in page.captions[im["figure"]]


# -- the caller's own sections (the demo's page is built this way) -----------------------------------------------
def test_own_sections_in_the_report_style_and_navigation(tmp_path: Path, digit_scope: cs.Scope) -> None:
    from convscope.reporting import Group, Link, PictureRef, Section, Table

    red = PictureRef.of("section/red", Image.new("RGB", (40, 20), "red"), "a red <box>", note="why: it is red",
                        kind="attribution", data={"target": "3"}, file="red.png")  # fmt: skip
    blue = PictureRef.of("section/blue", Image.new("L", (8, 8)), "a black square", alt="black, 8×8")
    sections = [
        Section("Training", "six epochs & more", pre=["loss 0.1"], tables=[Table(["a", "b"], [["1", "2"]], "t")],
                links=[Link("other.html", "the other page", "its detail")], pictures=[red]),  # fmt: skip
        Section("Training", groups=[Group("a row", [blue, red], "row text")]),  # same title, same picture again
    ]
    out = cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "own.html", layers=["conv_0"], methods=(),
                    intro="hello from the intro", links=[Link("a.html", "A")], sections=sections)  # fmt: skip
    page = parse(out.path)
    nav = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith("#")]
    assert nav == ["#overview", "#section-training", "#section-training-2", "#layer-conv_0"]  # page order
    ids = [a["id"] for _, a in page.tags if "id" in a]
    assert all(h[1:] in ids for h in nav)
    assert ids.index("section-training-2") < ids.index("layer-conv_0")  # sections come before the layers
    figures = [a for t, a in page.tags if t == "figure" and a.get("class") == "attribution"]
    assert len(figures) == 2 and all(f["data-target"] == "3" for f in figures)
    assert ("a", {"class": "file", "href": "red.png"}) in page.tags
    assert ("a", {"class": "link", "href": "other.html"}) in page.tags and ("a", {"class": "link", "href": "a.html"}) in page.tags
    text = out.path.read_text(encoding="utf-8")
    for shown in ("a red &lt;box&gt;", "why: it is red", "six epochs &amp; more", "hello from the intro", "row text",
                  "<pre>loss 0.1</pre>", "<caption>t</caption>", "its detail"):  # fmt: skip
        assert shown in text, shown
    own = [im for im in page.images if im["alt"] in ("a red <box>", "black, 8×8")]
    assert len(own) == 3 and all("style" not in im for im in own)  # drawn for the page: shown at their own size
    assert {(im["width"], im["height"]) for im in own} == {("40", "20"), ("8", "8")}
    assert out.pictures == 1 + 16 + 1 + 1 + 2  # input, tiles, mosaic, kernels, and each own picture once


def test_own_picture_facts_must_be_attribute_names() -> None:
    from convscope.reporting import PictureRef

    img = Image.new("L", (2, 2))
    with pytest.raises(cs.OptionError, match="data key 'on click'"):
        PictureRef.of("k", img, "c", data={"on click": "x"})
    with pytest.raises(cs.OptionError, match="kind="):
        PictureRef.of("k", img, "c", kind='a" onmouseover="x')


def test_progress_is_one_line_per_job_off_a_terminal(tmp_path: Path, digit_scope: cs.Scope,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Off a terminal the report says each job once, numbered against the total, with its time; silent
    with progress=False; a non-bool progress is an OptionError."""
    cs.report(digit_scope, [cs.sample_image("digit")] * 2, out=tmp_path / "p.html", layers=["conv_0"],
              methods=("gradcam", "saliency"), metric_steps=4)  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    jobs = [line for line in lines if line.startswith("report: ")]
    assert len(jobs) == 4, lines
    assert re.fullmatch(r"report: forward pass of 2 image\(s\) \(1/4\) \d+\.\ds", jobs[0])
    assert jobs[1].startswith("report: gradcam with deletion/insertion (2/4)")
    assert jobs[2].startswith("report: saliency with deletion/insertion (3/4)")
    assert re.fullmatch(r"report: drawing \d+ pictures into p\.html \(4/4\) \d+\.\ds", jobs[3])
    cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "q.html", layers=["conv_0"], methods=(),
              progress=False)  # fmt: skip
    assert "report:" not in capsys.readouterr().err
    with pytest.raises(cs.OptionError, match="progress='yes' is not allowed"):
        cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "r.html", progress="yes")  # type: ignore[arg-type]


# -- wrong arguments: refused up front, naming what to pass ----------------------------------------------------
class _NoModelWork:
    """Has the Scope API; any call means the report started model work before checking its arguments."""

    def __getattr__(self, name: str) -> Any:
        if name in ("summary", "activations", "attribute", "input_spec", "preprocessing", "predict"):
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise AssertionError(f"scope.{name} called before the arguments were checked")
            return fail
        raise AttributeError(name)


def _wrong_arguments() -> list[Any]:
    from convscope.reporting import Group, Link, PictureRef, Section, Table

    pil = Image.new("RGB", (4, 4))
    pic = PictureRef.of("section/a", pil, "a")
    other = PictureRef.of("section/a", pil, "another picture, same key")
    return [
        pytest.param({"sections": "Notes"}, r"sections='Notes' \(a str\).*cs\.reporting\.Section", id="sections-str"),
        pytest.param({"sections": [{"title": "x"}]}, r"sections\[0\]=.*dict.*cs\.reporting\.Section", id="sections-dict"),
        pytest.param({"sections": [("A", "b")]}, r"sections\[0\]=.*tuple.*cs\.reporting\.Section", id="sections-tuple"),
        pytest.param({"sections": 3}, r"sections=3 \(a int\).*cs\.reporting\.Section", id="sections-int"),
        pytest.param({"links": ["notes.txt"]}, r"links\[0\]='notes\.txt'.*cs\.reporting\.Link", id="links-str-list"),
        pytest.param({"links": "notes.txt"}, r"links='notes\.txt'.*cs\.reporting\.Link", id="links-str"),
        pytest.param({"sections": [Section("A", pictures=[pic]), Section("B", groups=[Group("g", [other])])]},
                     r"two different pictures have the key 'section/a'.*'A'.*'B'", id="duplicate-key"),  # fmt: skip
        pytest.param({"sections": [Section("A", pictures=[PictureRef.of("image/0", pil, "x")])]},
                     r"picture key 'image/0' is the report's own", id="built-in-key"),  # fmt: skip
        pytest.param({"maximize_steps": 0}, r"maximize_steps=0 is not allowed; pass an int >= 1", id="maximize-steps"),
        pytest.param({"metric_steps": -1}, r"metric_steps=-1 is not allowed", id="metric-steps"),
        pytest.param({"title": 5}, r"title=5 \(a int\) is not allowed; pass a str or None", id="title"),
        pytest.param({"intro": ["x"]}, r"intro=.* is not allowed; pass a str", id="intro"),
        pytest.param({"targets": "3"}, r"targets='3'.*list of class indices", id="targets"),
        pytest.param({"progress": "yes"}, r"progress='yes' is not allowed", id="progress"),
        pytest.param({"out": "b.png"}, r"out='b\.png' is not allowed.*\.html or \.htm", id="out-suffix"),
        pytest.param({"out": 3}, r"out=3 \(a int\) is not allowed", id="out-type"),
        pytest.param({"sections": [Section("A", links=[Link("a.txt", "a")])], "links": [Table(["a"], [])]},
                     r"links\[0\]=Table.*cs\.reporting\.Link", id="links-table"),  # fmt: skip
    ]


@pytest.mark.parametrize(("kwargs", "message"), _wrong_arguments())
def test_wrong_report_arguments_are_refused_up_front(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"out": tmp_path / "r.html", **kwargs}
    with pytest.raises(cs.OptionError, match=message):
        cs.report(_NoModelWork(), Image.new("L", (28, 28)), **kwargs)


def test_out_directory_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(cs.OptionError, match=r"is a directory; pass the path of an \.html file"):
        cs.report(_NoModelWork(), Image.new("L", (28, 28)), out=tmp_path)


def test_bare_model_needs_a_scope(tmp_path: Path) -> None:
    with pytest.raises(cs.OptionError, match=r"is not a convscope Scope .*pass cs\.Scope\(model\)"):
        cs.report(torch_digits_model(seed=0), Image.new("L", (28, 28)), out=tmp_path / "m.html")


def _wrong_parts() -> list[Any]:
    from convscope.reporting import Group, Link, PictureRef, Section, Table

    pil = Image.new("RGB", (4, 4))
    pic = PictureRef.of("section/p", pil, "p")
    return [
        pytest.param(lambda: Section(3), r"Section\(title=3 \(a int\)\).*non-empty str", id="title-int"),  # type: ignore[arg-type]
        pytest.param(lambda: Section(""), r"Section\(title=''.*non-empty str", id="title-empty"),
        pytest.param(lambda: Section("A", ["x", "y"]), r"Section\('A'\): text=.*list.*pass a str.*pre=", id="text-list"),  # type: ignore[arg-type]
        pytest.param(lambda: Section("A", pre=[3]), r"Section\('A'\): pre holds 3", id="pre-int"),  # type: ignore[list-item]
        pytest.param(lambda: Section("A", tables=[[["a"]]]), r"tables\[0\]=.*list.*cs\.reporting\.Table", id="tables-nested"),  # type: ignore[list-item]
        pytest.param(lambda: Section("A", tables="t"), r"tables='t'.*list of cs\.reporting\.Table", id="tables-str"),  # type: ignore[arg-type]
        pytest.param(lambda: Section("A", pictures=[pil]), r"pictures\[0\]=.*Image.*cs\.reporting\.PictureRef", id="pictures-pil"),  # type: ignore[list-item]
        pytest.param(lambda: Section("A", links=["notes.txt"]), r"links\[0\]='notes\.txt'.*cs\.reporting\.Link", id="links-str"),  # type: ignore[list-item]
        pytest.param(lambda: Section("A", groups=[pil]), r"groups\[0\]=.*cs\.reporting\.Group", id="groups-pil"),  # type: ignore[list-item]
        pytest.param(lambda: Group("g", [pil]), r"Group\('g'\): pictures\[0\]=.*cs\.reporting\.PictureRef", id="group-pil"),  # type: ignore[list-item]
        pytest.param(lambda: Table(["a", "b"], [["1"]]), r"rows\[0\] has 1 cells but the header has 2", id="ragged"),
        pytest.param(lambda: Table(["a"], [[object()]]), r"rows\[0\]\[0\]=.*must be a str", id="cell-object"),
        pytest.param(lambda: Link("", "x"), r"Link: href='' .*non-empty str", id="link-empty"),
        pytest.param(lambda: PictureRef.of("k", pil, "c", notes="x"), r"unknown keyword 'notes'; allowed: alt, note, kind, data, file",
                     id="of-keyword"),  # fmt: skip
        pytest.param(lambda: PictureRef.of("k", [1, 2], "c"), r"image=\[1, 2\] \(a list\) is not allowed; pass a PIL\.Image",
                     id="of-list"),  # fmt: skip
        pytest.param(lambda: PictureRef.of("k", __import__("numpy").zeros((4, 4)), "c"), r"float64 array is not allowed; pass a uint8",
                     id="of-float-array"),  # fmt: skip
        pytest.param(lambda: PictureRef.of("k", __import__("numpy").zeros((3, 4, 5), "uint8"), "c"),
                     r"shape \(3, 4, 5\) is not allowed", id="of-channels-first"),  # fmt: skip
        pytest.param(lambda: Section("A", pictures=[pic], anchor=5), r"anchor=5", id="anchor"),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(("make", "message"), _wrong_parts())
def test_wrong_section_parts_are_refused(make: Any, message: str) -> None:
    with pytest.raises(cs.OptionError, match=message):
        make()


def test_section_parts_changed_later_are_checked_by_the_report(tmp_path: Path) -> None:
    from convscope.reporting import Section

    s = Section("A")
    s.pictures.append(Image.new("L", (2, 2)))  # type: ignore[arg-type]
    with pytest.raises(cs.OptionError, match=r"Section\('A'\): pictures\[0\]=.*cs\.reporting\.PictureRef"):
        cs.report(_NoModelWork(), Image.new("L", (28, 28)), out=tmp_path / "r.html", sections=[s])


def test_friendly_forms_are_accepted() -> None:
    import numpy as np

    from convscope.reporting import Link, PictureRef, Section, Table
    from convscope.reporting.sections import check_links, check_sections

    pil = Image.new("RGB", (4, 4))
    pic = PictureRef.of("section/p", pil, "p")
    s = Section("A", pre="one block", tables=Table(("a", "b"), [("x", 1)]), pictures=pic)  # type: ignore[arg-type]
    assert s.pre == ["one block"] and s.tables[0].rows == [["x", "1"]] and s.pictures == [pic]
    assert check_sections(s) == [s] and check_sections(None) == [] and check_links(None) == []
    assert check_links(Link("a.txt", "a")) == [Link("a.txt", "a")]
    assert check_sections([Section("A", pictures=[pic]), Section("B", pictures=[pic])])  # the same object twice
    for array, mode in ((np.zeros((4, 5), np.uint8), "L"), (np.zeros((4, 5, 1), np.uint8), "L"),
                        (np.zeros((4, 5, 3), np.uint8), "RGB"), (np.zeros((4, 5, 4), np.uint8), "RGBA")):  # fmt: skip
        img = PictureRef.of("section/arr", array, "c").image()
        assert img.mode == mode and img.size == (5, 4)


def test_picture_from_a_path(tmp_path: Path) -> None:
    from convscope.reporting import PictureRef

    Image.new("RGB", (6, 3), "red").save(tmp_path / "red.png")
    assert PictureRef.of("section/red", tmp_path / "red.png", "red").image().size == (6, 3)
    assert PictureRef.of("section/red", str(tmp_path / "red.png"), "red").image().size == (6, 3)
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    with pytest.raises(cs.InputError, match=r"not an image file PIL can read"):
        PictureRef.of("section/n", tmp_path / "notes.txt", "n")
    with pytest.raises(cs.InputError, match=r"no such image file"):
        PictureRef.of("section/m", tmp_path / "missing.png", "m")


def test_progress_none_is_the_default(tmp_path: Path, digit_scope: cs.Scope, capsys: pytest.CaptureFixture[str]) -> None:
    cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "n.html", layers=["conv_0"], methods=(),
              progress=None)  # fmt: skip
    assert "report: forward pass" in capsys.readouterr().err


def test_progress_lines_come_in_order_and_time_the_feature_visualisations(
        tmp_path: Path, digit_scope: cs.Scope, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import re

    cs.report(digit_scope, cs.sample_image("digit"), out=tmp_path / "p.html", layers=["conv_0", "conv_1"],
              methods=("gradcam",), maximize=True, maximize_steps=8, progress=True)  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("report: ")]
    jobs = [re.fullmatch(r"report: (.+) \((\d+)/(\d+)\) [\d.]+s", line) for line in lines]
    assert all(jobs), lines
    assert [int(m[2]) for m in jobs] == list(range(1, len(jobs) + 1)) and {int(m[3]) for m in jobs} == {len(jobs)}
    names = [m[1] for m in jobs]
    assert names[0].startswith("forward pass") and names[-1].startswith("drawing")
    # the maximisation runs when its picture is drawn, so its job comes just before "drawing ..." ends
    assert names[-3:-1] == ["feature visualisations of conv_0", "feature visualisations of conv_1"], names


def test_cli_refuses_bad_output_and_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from convscope.cli import main

    digit = str(cs.sample_image("digit"))
    base = ["report", "convscope.demo.models:torch_digits_model", digit, "--input-shape", "1,28,28", "--layers", "conv_0"]
    def errors() -> list[str]:
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("convscope: error:")]

    assert main([*base, "-o", str(tmp_path)]) == 2
    err = errors()
    assert len(err) == 1 and "-o " in err[0] and "is a directory" in err[0], err
    assert main([*base, "-o", str(tmp_path / "b.png")]) == 2
    err = errors()
    assert len(err) == 1 and "-o " in err[0] and ".html or .htm" in err[0], err
    assert main([*base, "-o", str(tmp_path / "t.html"), "--targets", "9", "--no-progress"]) == 0
    assert "report:" not in capsys.readouterr().err  # --no-progress: silent
    assert main([*base, "-o", str(tmp_path / "t.html"), "--targets", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--targets 10" in err and "--target " not in err, err
