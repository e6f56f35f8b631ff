"""The command line: model loading (Keras file, factory + weights, torch.export, TorchScript), verbs, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.cli import main
from convscope.demo.models import keras_digits_model, torch_digits_model
from convscope.errors import ModelLoadError
from convscope.loading import load_model

FACTORY = "convscope.demo.models:torch_digits_model"


@pytest.fixture()
def digit_png(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "digit.png"
    Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def keras_file(tmp_path: Path) -> Path:
    path = tmp_path / "digits.keras"
    keras_digits_model(seed=1).save(path)
    return path


@pytest.fixture()
def torch_weights(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = torch_digits_model(seed=3)
    path = tmp_path / "digits.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_summary_of_keras_file_matches_keras(keras_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(keras_file)]) == 0
    out = capsys.readouterr().out
    model = load_model(str(keras_file))
    assert f"Total params: {model.count_params():,}" in out
    for layer in model.layers:
        assert f"{layer.name} ({type(layer).__name__})" in out


def test_factory_with_weights_loads_the_saved_weights(torch_weights: tuple[Path, torch.nn.Module]) -> None:
    path, original = torch_weights
    loaded = load_model(FACTORY, weights=str(path))
    for (k, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    fresh = load_model(FACTORY)
    assert not torch.equal(fresh.conv_0.weight, original.conv_0.weight)  # the weights did change something


def test_weights_load_safely_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": Path("x")}, path)  # a non-tensor object
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_model(FACTORY, weights=str(path))


def test_maps_writes_the_grid(tmp_path: Path, digit_png: Path, torch_weights: tuple[Path, torch.nn.Module]) -> None:
    out = tmp_path / "maps.png"
    rc = main(["maps", FACTORY, str(digit_png), "--weights", str(torch_weights[0]), "--layer", "conv_0",
               "--input-shape", "1,28,28", "-o", str(out), "--scale", "1"])  # fmt: skip
    assert rc == 0
    img = Image.open(out)
    assert img.size == (8 * 26 * 2 + 7, 4 * 26 * 2 + 3)  # 32 maps of 26x26 as 4x8, x2 upscale, 1 px gaps


def test_filters_of_keras_file(tmp_path: Path, keras_file: Path) -> None:
    out = tmp_path / "f.png"
    assert main(["filters", str(keras_file), "--layer", "conv_0", "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 0


def test_torch_export_file_captures_activations(tmp_path: Path, digit_png: Path) -> None:
    model = torch_digits_model(seed=0).eval()
    path = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 28, 28),)), path)
    import convscope as cs

    loaded = load_model(str(path))
    scope = cs.Scope(loaded, input_shape=(1, 28, 28))
    x = torch.rand(1, 1, 28, 28)  # exported without a dynamic batch dimension
    acts = scope.activations(x, layers="conv_0")
    assert torch.allclose(acts["conv_0"].tensor, model.conv_0(x), atol=1e-6)


def test_torchscript_file_summarises_and_refuses_hooks_clearly(
    tmp_path: Path, digit_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = torch_digits_model(seed=0)
    path = tmp_path / "digits.ts"
    torch.jit.script(model).save(str(path))
    assert main(["summary", str(path)]) == 0
    assert f"Total params: {sum(p.numel() for p in model.parameters()):,}" in capsys.readouterr().out
    argv = ["maps", str(path), str(digit_png), "--layer", "conv_0", "--input-shape", "1,28,28", "-o", str(tmp_path / "m.png")]
    assert main(argv) == 2
    assert "TorchScript module, which cannot take hooks" in capsys.readouterr().err


def test_maps_with_a_glob_writes_one_file_per_layer(tmp_path: Path, digit_png: Path, keras_file: Path) -> None:
    out = tmp_path / "maps.png"
    assert main(["maps", str(keras_file), str(digit_png), "--layer", "conv_*", "-o", str(out), "--scale", "1"]) == 0
    assert Image.open(tmp_path / "maps_conv_0.png").size == (8 * 52 + 7, 4 * 52 + 3)
    assert Image.open(tmp_path / "maps_conv_1.png").size == (8 * 48 + 7, 8 * 48 + 7)
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["summary", "nope.keras"], "does not exist"),
        (["summary", "no_such_pkg.mod:f"], "cannot import"),
        (["filters", FACTORY, "--layer", "conv_9", "-o", "x.png"], "closest: 'conv_1', 'conv_0'"),
        (["filters", FACTORY, "--layer", "dense_0", "-o", "x.png"], "no 2-D convolution kernel"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    lines = err.splitlines()  # a factory without --weights adds one warning line
    assert "Traceback" not in err and [ln for ln in lines if ln.startswith("convscope: error:")] == lines[-1:]
    assert all(ln.startswith("convscope: warning: factory") for ln in lines[:-1])


def test_console_script_runs_without_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "convscope.cli", "summary", "missing.h5"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("convscope: error:") and "Traceback" not in proc.stderr


def test_maximize_verb_on_a_keras_file_and_a_factory(tmp_path: Path, keras_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "conv_1.png"
    assert main(["maximize", str(keras_file), "--layer", "conv_1", "--channels", "0-3", "--steps", "4", "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 0
    # a factory model with no declared input size: a clear hint instead of a shape error from torch
    assert main(["maximize", FACTORY, "--class", "0-2", "--steps", "2", "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert "--input-shape" in err and "--size" in err and "Scope(" not in err
    assert [ln.split(":")[1] for ln in err.splitlines()] == [" warning", " error"]  # no --weights: a warning
    rc = main(["maximize", FACTORY, "--input-shape", "1,28,28", "--class", "0-2", "--steps", "2", "-o", str(tmp_path / "c.png")])
    assert rc == 0 and Image.open(tmp_path / "c.png").size[0] > 0
