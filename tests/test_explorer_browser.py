"""The explorer in a real browser: Playwright for Python driving Debian's chromium (never a downloaded one)
against uvicorn on 127.0.0.1. Skipped only when chromium is missing and CI is not "true"."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

import torch  # noqa: E402

import convscope as cs  # noqa: E402
from conftest import TinyNet  # noqa: E402
from convscope.demo.models import torch_digits_model  # noqa: E402
from convscope.explorer import Server, make_app  # noqa: E402

DATA = Path(cs.__file__).with_name("data")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
READY = "document.body.dataset.ready === location.hash"
DECODED = "[...document.images].every((i) => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _serve(scope: Any, images: Any = None) -> Server:
    return Server(make_app(scope, images=images, steps=6), host="127.0.0.1", port=0).start()


def _digit_scope(kind: str, request: Any) -> Any:
    """The digits CNN as PyTorch (NCHW, declared input shape) or Keras 3 (NHWC, shape from the model)."""
    if kind == "keras":
        request.getfixturevalue("keras")  # skips without Keras; asserts the torch backend
        from convscope.demo.models import keras_digits_model

        return cs.Scope(keras_digits_model(seed=0))
    torch.manual_seed(0)
    return cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28))


@pytest.fixture(scope="module", params=["torch", "keras"])
def digit_server(request: Any) -> Iterator[Server]:
    server = _serve(_digit_scope(request.param, request))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def residual_server() -> Iterator[Server]:
    torch.manual_seed(0)
    server = _serve(cs.Scope(TinyNet(), input_shape=(3, 8, 8)), images=[str(DATA / "cat.jpg")])
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    # an <img> whose src the page replaced before it loaded is cancelled (net::ERR_ABORTED): not an error;
    # every other failed request, and every 4xx/5xx response, is
    pg.on("requestfailed", lambda r: None if "ERR_ABORTED" in (r.failure or "") else pg.errors.append(
        f"failed {r.url}: {r.failure}"))
    pg.on("response", lambda r: pg.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def _layers(page: Any) -> list[tuple[str, int]]:
    model = page.evaluate("""async () => (await (await fetch('/api/model?token=' +
        new URLSearchParams(location.search).get('token'))).json()).layers""")
    return [(row["id"], row["channels"]) for row in model if row["viewable"]]


def _click_every_layer(page: Any) -> None:
    for ident, channels in _layers(page):
        page.evaluate("document.querySelectorAll('#layers details').forEach((d) => { d.open = true; })")
        page.locator(f'button.layer[data-layer="{ident}"]').click()
        page.wait_for_function(f"{READY} && location.hash.includes('layer/' + encodeURIComponent({ident!r}))")
        assert page.locator(".tile").count() == min(64, channels), ident
        page.wait_for_function(DECODED)


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("CONVSCOPE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_digit_cnn_upload_every_layer_channel_norm_deeplink_history(page: Any, digit_server: Server,
                                                                   request: Any) -> None:
    """The same walk for the PyTorch and the Keras 3 digits CNN (both name their layers conv_0, conv_1, pool)."""
    page.goto(digit_server.url)
    page.wait_for_selector("button.layer")
    page.set_input_files("#file", str(DATA / "digit.png"))
    page.wait_for_selector("#thumbs button.current img")
    page.wait_for_function("/img=img-/.test(location.hash)")
    _click_every_layer(page)

    page.locator('button.layer[data-layer="conv_1"]').click()
    page.wait_for_function(f"{READY} && location.hash.startsWith('#/layer/conv_1')")
    page.locator(".tile").nth(2).click()
    page.wait_for_selector("[data-testid=inspector-title]")
    title = page.locator("[data-testid=inspector-title]").inner_text()
    assert re.fullmatch(r"conv_1 · channel \d+", title)
    page.wait_for_selector("[data-testid=kernel]")
    page.wait_for_function(DECODED)

    page.select_option("#norm", "layer")  # normalisation: a new mosaic with the same tiles
    page.wait_for_function(f"{READY} && location.hash.includes('norm=layer')")
    assert "norm=layer" in page.locator(".mosaic img").get_attribute("src")
    assert page.locator(".tile").count() == 64
    page.wait_for_function(DECODED)

    page.locator("[data-testid=vis-run]").click()  # feature visualisation, with progress, then shown
    page.wait_for_selector("[data-testid=vis]", timeout=60_000)
    page.wait_for_function(DECODED)
    _shot(page, f"digit_conv_1_{request.node.callspec.params['digit_server']}")

    image = re.search(r"img=(img-[0-9a-f]+)", page.url).group(1)
    deep = f"{digit_server.url}#/layer/conv_1/channel/41?img={image}&norm=symmetric"
    page.goto(deep)
    page.wait_for_function(READY)
    page.reload()
    page.wait_for_function(READY)
    assert page.locator("[data-testid=inspector-title]").inner_text() == "conv_1 · channel 41"
    assert page.locator("#norm").input_value() == "symmetric"
    assert page.locator(".tile.current").get_attribute("data-channel") == "41"

    page.locator('button.layer[data-layer="pool"]').click()
    page.wait_for_function(f"{READY} && location.hash.startsWith('#/layer/pool')")
    page.go_back()
    page.wait_for_function(f"{READY} && location.hash.startsWith('#/layer/conv_1/channel/41')")
    assert page.locator("[data-testid=inspector-title]").inner_text() == "conv_1 · channel 41"
    page.go_forward()
    page.wait_for_function(f"{READY} && location.hash.startsWith('#/layer/pool')")
    assert page.locator(".tile").count() == 64
    assert page.errors == []


def test_residual_net_every_layer_two_images_side_by_side(page: Any, residual_server: Server) -> None:
    page.goto(residual_server.url)
    page.wait_for_function(f"{READY} && /img=img-/.test(location.hash)")
    _click_every_layer(page)
    page.set_input_files("#file", str(DATA / "digit.png"))  # a second image, then both for one channel
    page.wait_for_function("document.querySelectorAll('#thumbs button').length === 2")
    page.wait_for_function(READY)
    first, second = page.locator("#thumbs button").evaluate_all("(bs) => bs.map((b) => b.dataset.image)")
    page.goto(f"{residual_server.url}#/layer/layer1.0.conv2/channel/1?img={first}&cmp={second}")
    page.wait_for_function(f"{READY} && document.querySelectorAll('.over').length === 2")
    assert page.locator("[data-testid=inspector-title]").inner_text() == "layer1.0.conv2 · channel 1"
    page.wait_for_function(DECODED)
    page.locator("[data-testid=explain]").click()  # attribution over the image
    page.wait_for_selector("[data-testid=att]")
    page.wait_for_function(DECODED)
    _shot(page, "residual_compare")
    assert page.errors == []
