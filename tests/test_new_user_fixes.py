"""New-user review fixes: one-line CLI errors, CLI hints, ``name@k`` queries, output names, .pt2 guided
backprop, damaged .keras files, short channel errors, strip titles and colour bars, ``--scale auto``,
model-layout shapes in messages, factory/label/overlay/maximize hints.

Each test names the review point it covers.
"""

from __future__ import annotations

import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope as cs
from convscope.cli import main
from convscope.errors import ConvscopeError, ModelLoadError, OptionError
from convscope.loading import load_model

NETS = '''
import torch
from torch import nn


class Basic(nn.Module):
    """A ResNet basic block: one ReLU module called twice."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.layer1 = Basic(16)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.flat(self.gap(self.layer1(torch.relu(self.stem(x))))))


def net():
    torch.manual_seed(0)
    return Net().eval()
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A factory module ``mynets_fix`` with ``net`` and saved weights, importable from ``sys.path``."""
    root = tmp_path_factory.mktemp("nets")
    (root / "mynets_fix.py").write_text(textwrap.dedent(NETS))
    sys.path.insert(0, str(root))
    import mynets_fix

    torch.save(mynets_fix.net().state_dict(), root / "net.pt")
    yy, xx = np.mgrid[0:16, 0:16]
    smooth = np.stack([yy * 15, xx * 15, (yy + xx) * 7], axis=-1).astype(np.uint8)  # a photo-like gradient
    Image.fromarray(smooth).save(root / "img.png")
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("mynets_fix", None)


@pytest.fixture()
def margs(nets: Path) -> list[str]:
    return ["mynets_fix:net", "--weights", str(nets / "net.pt"), "--input-shape", "3,16,16"]


@pytest.fixture()
def scope(nets: Path) -> cs.Scope:
    import mynets_fix

    return cs.Scope(mynets_fix.net(), input_shape=(3, 16, 16))


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err and err.count("\n") == 1, err
    assert err.startswith("convscope: error: "), err
    return err.rstrip("\n")


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


# -- 3: argparse errors are one line, with closest names ------------------------------------------------
def test_argparse_errors_are_one_line_naming_the_flag(margs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["summary", margs[0], "--input-shape", "3,64"]) == 2
    assert error_line(capsys) == ("convscope: error: --input-shape: expected three numbers (one sample, no batch); "
                                  "got '3,64'")  # fmt: skip
    assert run(["maximize", margs[0]]) == 2
    assert "--layer" in (line := error_line(capsys)) and "--class" in line


def test_unknown_verb_and_flag_name_the_closest(margs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["summry", "x"]) == 2
    assert error_line(capsys).startswith("convscope: error: unknown command 'summry' (closest: 'summary')")
    assert run(["summary", margs[0], "--inptu-shape", "3,4,4"]) == 2
    assert error_line(capsys) == "convscope: error: unknown option --inptu-shape (closest: --input-shape)"


def test_filters_and_maps_default_layers(nets: Path, margs: list[str], capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(nets)
    assert main(["filters", *margs]) == 0
    out = capsys.readouterr().out
    assert "first conv layer, 'stem'" in out and (nets / "filters_stem.png").exists()
    assert main(["maps", *margs, str(nets / "img.png")]) == 0
    out = capsys.readouterr().out
    assert "--layer not given: showing every layer with spatial maps" in out
    assert "layer1.relu@1" in out and (nets / "maps_layer1.relu-call1.png").exists()


# -- 4: hints in CLI terms, files named ---------------------------------------------------------------
def test_cli_hints_use_flags(nets: Path, margs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    img = str(nets / "img.png")
    assert main(["attribute", *margs, img, "--layer", "fc"]) == 2
    line = error_line(capsys)
    assert line.endswith("omit --layer to use the last block's output") and "None" not in line
    assert main(["attribute", *margs, img, "--layer", "layer1.relu"]) == 2
    line = error_line(capsys)
    assert "omit --layer to use the last block's output" in line and "'layer1.relu@1'" in line
    assert main(["maps", *margs, img, "--layer", "stem", "--mean", "0.5,0.5"]) == 2
    assert error_line(capsys) == "convscope: error: --mean 0.5,0.5 has 2 values; pass 1 or 3"


def test_16_bit_image_error_names_the_file(nets: Path, scope: cs.Scope) -> None:
    path = nets / "deep.png"
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).save(path)
    with pytest.raises(ConvscopeError, match=r"deep\.png.*'I;16'-mode"):
        scope.activations(str(path), layers="stem")


# -- 5: 'name@k' is a valid query everywhere ----------------------------------------------------------
def test_name_at_k_selects_one_call(scope: cs.Scope, nets: Path) -> None:
    img = str(nets / "img.png")
    both = scope.activations(img, layers="layer1.relu")
    assert list(both) == ["layer1.relu", "layer1.relu@1"]
    one = scope.activations(img, layers="layer1.relu@1")
    assert list(one) == ["layer1.relu@1"]
    assert torch.equal(one["layer1.relu@1"].tensor, both["layer1.relu@1"].tensor)
    assert [t.call for t in scope.targets("layer1.relu@1")] == [1]
    with pytest.raises(ConvscopeError, match="ran 2 time"):
        scope.activations(img, layers="layer1.relu@5")


def test_name_at_k_for_cam_and_summary(scope: cs.Scope, nets: Path) -> None:
    img = str(nets / "img.png")
    att = scope.attribute(img, method="gradcam", layer="layer1.relu@1", target=2)
    assert att.layer == "layer1.relu@1"
    same = scope.attribute(img, method="gradcam", layer="layer1", target=2)  # the block ends in that call
    np.testing.assert_allclose(att.maps, same.maps, atol=1e-5)
    names = [r.name for r in scope.summary().rows]
    assert names.count("layer1.relu") == 1 and names.count("layer1.relu@1") == 1


def test_maximize_names_the_call_it_used(scope: cs.Scope) -> None:
    # a plain name means the first call (maximize runs only up to it, so it cannot know of later calls)
    objective = cs.optim.objectives.channel("layer1.relu@1", 0)
    assert len(scope.maximize(objective, steps=1, progress=None)) == 1 and "layer1.relu@1" in objective.name


# -- 6: one file per matched output, named as printed ------------------------------------------------
def test_several_outputs_write_call_named_files(nets: Path, margs: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "x.jpg"
    assert main(["maps", *margs, str(nets / "img.png"), "--layer", "layer1.relu", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "--layer layer1.relu matched 2 outputs; writing one file each" in text
    for name in ("x_layer1.relu.jpg", "x_layer1.relu-call1.jpg"):
        assert (tmp_path / name).exists() and str(tmp_path / name) in text


# -- 7: guided backprop on a .pt2 export --------------------------------------------------------------
@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "guided_gradcam"])
def test_guided_methods_on_pt2_match_the_factory(scope: cs.Scope, nets: Path, method: str) -> None:
    path = nets / "net.pt2"
    if not path.exists():
        torch.export.save(torch.export.export(scope.model, (torch.zeros(1, 3, 16, 16),)), path)
    exported = cs.Scope(load_model(str(path)))
    img = str(nets / "img.png")
    a = scope.attribute(img, method=method, target=3)
    b = exported.attribute(img, method=method, target=3)
    assert np.abs(a.raw).max() > 0
    np.testing.assert_allclose(b.raw, a.raw, rtol=1e-4, atol=1e-7)


# -- 8: a truncated .keras archive ----------------------------------------------------------------------
def test_truncated_keras_archive_says_damaged(tmp_path: Path) -> None:
    good = tmp_path / "good.keras"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("config.json", "{}" + " " * 4000)
        z.writestr("model.weights.h5", b"\0" * 4000)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(ModelLoadError, match="truncated or damaged zip archive") as exc:
        load_model(str(bad))
    assert "starts with" not in str(exc.value)


# -- 9: short channel range errors ----------------------------------------------------------------------
def test_channels_out_of_range_is_short(scope: cs.Scope, nets: Path, margs: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    fm = scope.activations(str(nets / "img.png"), layers="stem")["stem"]
    with pytest.raises(OptionError) as exc:
        fm.grid(channels=list(range(100)))
    assert str(exc.value) == "channels=0-99: layer 'stem' has 16 channels (0-15); out of range: 16-99"
    assert main(["maps", *margs, str(nets / "img.png"), "--layer", "stem", "--channels", "0-99"]) == 2
    line = error_line(capsys)
    assert line.startswith("convscope: error: --channels 0-99: layer 'stem' has 16 channels (0-15)")
    assert len(line) < 120


# -- 12/13: vector strips ---------------------------------------------------------------------------------
def test_strip_title_is_not_clipped() -> None:
    from convscope.render.strip import _MARGIN, strip_image

    values = np.array([0.1, 0.1, 0.2, 0.0, 0.1, 0.1, 0.1, 0.1, -0.1455, 0.2401])
    img = np.asarray(strip_image(values, name="fc"))
    title_rows = img[:14]
    ink = np.where((title_rows < 100).all(-1).any(0))[0]
    assert ink.max() <= img.shape[1] - 1 - _MARGIN  # a margin right of the title's last letter


def test_flat_strip_bar_ends_differ() -> None:
    from convscope.render.strip import bar_ends

    lo, hi = bar_ends(0.001, 0.0010004)
    assert lo != hi and float(lo) == pytest.approx(0.001) and float(hi) == pytest.approx(0.0010004)
    assert bar_ends(0.001, 0.001) == ("constant 0.001", "")


# -- 14: --scale auto -----------------------------------------------------------------------------------
def test_scale_auto_enlarges_small_pictures(nets: Path, margs: list[str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from convscope.cli import auto_scale

    assert (auto_scale(132, 64), auto_scale(300, 400), auto_scale(10, 10)) == (4, 1, 8)
    out, plain = tmp_path / "f.png", tmp_path / "g.png"
    assert main(["filters", *margs, "--layer", "stem", "-o", str(out)]) == 0
    assert "--scale auto: pictures enlarged" in capsys.readouterr().out
    assert main(["filters", *margs, "--layer", "stem", "-o", str(plain), "--scale", "1"]) == 0
    small, big = Image.open(plain), Image.open(out)
    n = auto_scale(small.width, small.height)
    assert n > 1 and big.size == (n * small.width, n * small.height) and min(big.size) >= 256


# -- 16: shapes in the model's own terms -----------------------------------------------------------------
def test_receptive_field_error_shows_the_model_shape(scope: cs.Scope) -> None:
    with pytest.raises(ConvscopeError, match=r"output shape \(None, 10\)"):
        scope.receptive_field("fc")


def test_objective_channel_error_shows_the_model_shape(scope: cs.Scope) -> None:
    with pytest.raises(OptionError, match=r"channel 16-19 out of range.*output shape \(None, 16, 16, 16\)$"):
        scope.maximize(cs.optim.objectives.channel("stem", [0, 16, 17, 18, 19]), steps=1, progress=None)


# -- 17: factory names, class names, overlay photo check ------------------------------------------------
def test_missing_factory_lists_callables(nets: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"has no attribute 'nte'; its functions and classes, closest "
                                             r"first: 'net'"):  # fmt: skip
        load_model("mynets_fix:nte")


def test_attribute_prints_the_class_name(nets: Path, margs: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)))
    out = tmp_path / "a.png"
    assert main(["attribute", *margs, str(nets / "img.png"), "--target", "3", "--labels", str(labels),
                 "-o", str(out)]) == 0  # fmt: skip
    assert "target class 3 (class3) ->" in capsys.readouterr().out


def test_overlay_on_another_photo_warns(scope: cs.Scope, nets: Path, tmp_path: Path) -> None:
    att = scope.attribute(str(nets / "img.png"), method="gradcam", target=1)
    big = Image.open(nets / "img.png").resize((48, 40), Image.Resampling.BILINEAR)
    big.save(tmp_path / "same.png")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        att.overlay(on=str(tmp_path / "same.png"))  # the attributed image, larger, other aspect: no warning
    other = Image.fromarray(np.full((30, 60, 3), 250, dtype=np.uint8))
    other.save(tmp_path / "other.png")
    with pytest.warns(UserWarning, match="does not look like the image this map was computed on"):
        att.overlay(on=str(tmp_path / "other.png"))


def test_cli_quiets_tensorflow_logs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert run(["summry", "x"]) == 2
    capsys.readouterr()
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "2"
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0"  # its notice is printed before the log level is read
