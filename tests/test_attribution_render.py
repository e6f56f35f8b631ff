"""Overlays, batch grids, notebook repr, input pictures and the ``convscope attribute`` sub-command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope as cs
from convscope.attribution.cli import add_attribute_command, parse_options, run_attribute
from convscope.attribution.result import display_images
from convscope.errors import InputError, OptionError
from convscope.render.overlay import overlay, resize_map, tile


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))  # fmt: skip


def test_overlay_blends_by_hand() -> None:
    black = np.zeros((4, 4, 3), np.uint8)
    img = overlay(black, np.ones((2, 2)), alpha=0.5, cmap="gray")
    assert img.size == (4, 4) and img.mode == "RGB"
    assert np.asarray(img)[0, 0].tolist() == [128, 128, 128]
    white = np.full((2, 2), 255, np.uint8)  # gray image input, map of zeros, full opacity
    assert np.asarray(overlay(white, np.zeros((2, 2)), alpha=1.0, cmap="gray")).max() == 0
    assert np.asarray(overlay(white, np.zeros((2, 2)), alpha=0.0)).min() == 255
    np.testing.assert_allclose(resize_map(np.ones((2, 3)), (4, 6)), 1.0)
    with pytest.raises(OptionError, match="alpha"):
        overlay(black, np.ones((2, 2)), alpha=1.5)
    with pytest.raises(OptionError, match="cmap"):
        overlay(black, np.ones((2, 2)), cmap="jett")
    with pytest.raises(InputError, match="uint8"):
        overlay(black.astype(np.float32), np.ones((2, 2)))


def test_tile_layout() -> None:
    tiles = [np.full((3, 5, 3), i * 40, np.uint8) for i in range(5)]
    img = tile(tiles, cols=2, padding=1)
    assert img.size == (2 * 5 + 1, 3 * 3 + 2)
    a = np.asarray(img)
    assert a[0, 0].tolist() == [0, 0, 0] and a[4, 6].tolist() == [120, 120, 120] and a[8, 10].tolist() == [255] * 3


def test_attribution_rendering_and_repr() -> None:
    scope = cs.Scope(small_net())
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    att = scope.attribute(x, method="gradcam", target=[0, 1, 2])
    assert att.overlay(1, alpha=0.3, cmap="inferno").size == (16, 16)
    assert att.grid(cols=3, padding=2).size == (3 * 16 + 4, 16)
    assert att.grid(indices=[2]).size == (16, 16)
    assert att._repr_png_().startswith(b"\x89PNG")
    assert repr(att) == "Attribution(method='gradcam', maps=(3, 16, 16), raw=(3, 8, 8), layer='2', targets=[0, 1, 2])"
    with pytest.raises(OptionError, match="out of range"):
        att.overlay(3)


def test_display_images_undo_preprocessing(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    scope = cs.Scope(small_net(), input_shape=(3, 16, 16), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    att = scope.attribute(rgb, method="saliency")
    np.testing.assert_array_equal(att.images[0], rgb)
    wide = display_images(np.full((1, 2, 2, 1), 1000.0), channels_last=True, scale=1 / 255, mean=None, std=None)
    assert wide.shape == (1, 2, 2, 3) and wide.max() == 0  # out-of-range constant input: min-max, no overflow
    path = att.save(tmp_path / "one.png")
    assert Image.open(path).size == (16, 16)


@pytest.mark.filterwarnings("ignore:.*raise steps")
def test_cli_attribute_writes_the_overlay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(image)
    parser = argparse.ArgumentParser(prog="convscope")
    add_attribute_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "out.png"
    args = parser.parse_args(["attribute", "model.pt", str(image), "--method", "integrated_gradients", "--target",
                              "2", "-o", str(out), "-O", "steps=4", "-O", "rule=riemann_middle", "--raw", str(tmp_path / "raw.npy"),
                              "--scale", "1"])  # fmt: skip
    scope = cs.Scope(small_net(), input_shape=(3, 16, 16))
    assert run_attribute(scope, args) == 0
    assert Image.open(out).size == (16, 16)
    assert np.load(tmp_path / "raw.npy").shape == (1, 3, 16, 16)
    assert "integrated_gradients, target class 2 ->" in capsys.readouterr().out
    assert parse_options(["steps=64", "baseline=blur", "alpha_norm=True"]) == {
        "steps": 64, "baseline": "blur", "alpha_norm": True}  # fmt: skip
    with pytest.raises(OptionError, match="KEY=VALUE"):
        parse_options(["steps"])
    from convscope.cli import check_choices  # the CLI checks values itself: one line with the closest names

    with pytest.raises(OptionError, match=r"--method 'nope' is not allowed; choose one of: 'saliency'"):
        check_choices(parser.parse_args(["attribute", "m", str(image), "--method", "nope"]))


@pytest.mark.filterwarnings("ignore:the .* map is all zero")
def test_convscope_attribute_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.cli import main

    (tmp_path / "tiny_attribution_model.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def make():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),\n"
        "                         nn.Flatten(), nn.Linear(4 * 8 * 8, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "sub" / "heat.png"
    code = main(["attribute", "tiny_attribution_model:make", str(image), "--input-shape", "3,16,16",
                 "--method", "gradcam++", "--layer", "1", "-o", str(out), "--scale", "1"])  # fmt: skip
    assert code == 0 and Image.open(out).size == (16, 16)
    bad = main(["attribute", "tiny_attribution_model:make", str(image), "--input-shape", "3,16,16",
                "--method", "saliency", "--layer", "1", "-o", str(out)])  # fmt: skip
    assert bad == 2
