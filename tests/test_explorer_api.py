"""The explorer's HTTP API: JSON shapes, mosaics, caching, jobs, the security table (one test per row) and
schemathesis fuzzing over its OpenAPI schema. Runs in-process (Starlette TestClient) plus one live server on
127.0.0.1 for the socket-level rows."""

from __future__ import annotations

import io
import itertools
import select
import socket
import struct
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import convscope as cs  # noqa: E402
from convscope.demo.models import torch_digits_model  # noqa: E402
from convscope.explorer import Server, make_app  # noqa: E402
from resnet_replica import ResNet18  # noqa: E402

DIGIT = Path(cs.__file__).with_name("data") / "digit.png"
CAT = Path(cs.__file__).with_name("data") / "cat.jpg"
BASE = "http://127.0.0.1:8000"


def _client(app: Any) -> TestClient:
    return TestClient(app, base_url=BASE, headers={"X-Convscope-Token": app.token})


@pytest.fixture(scope="module")
def digit_app() -> Any:
    torch.manual_seed(0)
    return make_app(cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28)), images=[str(DIGIT)], steps=8)


@pytest.fixture(scope="module")
def client(digit_app: Any) -> Iterator[TestClient]:
    with _client(digit_app) as c:
        yield c


@pytest.fixture(scope="module")
def image_id(client: TestClient) -> str:
    return str(client.get("/api/images").json()[0]["id"])


def _png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims ``width`` x ``height`` gray pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _layers(client: TestClient) -> list[dict[str, Any]]:
    return [row for row in client.get("/api/model").json()["layers"] if row["viewable"]]


# -- JSON shapes and pictures ----------------------------------------------------------------------------
def test_model_lists_every_summary_row(client: TestClient, digit_app: Any) -> None:
    info = client.get("/api/model").json()
    rows = digit_app.api.state.explorer.summary.rows
    assert [row["id"] for row in info["layers"]] == [r.name for r in rows]
    conv_1 = next(row for row in info["layers"] if row["id"] == "conv_1")
    assert conv_1 == {"id": "conv_1", "type": "Conv2d", "output_shape": [None, 64, 24, 24], "params": 18496,
                      "channels": 64, "spatial": True, "viewable": True, "group": []}  # fmt: skip
    assert "gradcam" in info["methods"] and info["normalizations"] == ["channel", "layer", "symmetric"]


@pytest.mark.parametrize("norm", ["channel", "layer", "symmetric"])
def test_mosaic_tile_count_is_min_64_channels_for_every_layer(client: TestClient, image_id: str, norm: str) -> None:
    for layer in _layers(client):
        query = {"image_id": image_id, "layer_id": layer["id"], "norm": norm}
        meta = client.get("/api/mosaic", params=query).json()
        assert len(meta["tiles"]) == min(64, layer["channels"]), layer["id"]
        picture = Image.open(io.BytesIO(client.get("/api/mosaic.png", params=query).content))
        assert picture.size == (meta["width"], meta["height"])
        for t in meta["tiles"]:
            assert t["x"] >= 0 and t["x"] + t["w"] <= meta["width"] and t["y"] + t["h"] <= meta["height"]
        boxes = {(t["x"], t["y"]) for t in meta["tiles"]}
        assert len(boxes) == len(meta["tiles"])  # no two tiles share a box


def test_mosaic_sorts_by_mean_max_and_index(client: TestClient, image_id: str) -> None:
    acts = client.app.api.state.explorer.scope.activations(DIGIT, layers="conv_1")["conv_1"].channels_first()[0]
    flat = acts.reshape(64, -1)
    for sort, score in (("mean", flat.mean(1)), ("max", flat.max(1))):
        tiles = client.get("/api/mosaic", params={"image_id": image_id, "layer_id": "conv_1", "sort": sort}).json()["tiles"]
        shown = [t["channel"] for t in tiles]
        assert shown == sorted(range(64), key=lambda c: -score[c])  # stable descending, as the renderer sorts
    tiles = client.get("/api/mosaic", params={"image_id": image_id, "layer_id": "conv_1", "sort": "index"}).json()["tiles"]
    assert [t["channel"] for t in tiles] == list(range(64))


def test_pages_of_a_wide_layer_cover_every_unit_once(client: TestClient, image_id: str) -> None:
    q = {"image_id": image_id, "layer_id": "flatten"}  # 9216 units: 144 pages
    first = client.get("/api/mosaic", params=q).json()
    assert first["pages"] == 144 and len(first["tiles"]) == 64
    last = client.get("/api/mosaic", params={**q, "page": 143}).json()
    assert len(last["tiles"]) == 64 and last["tiles"][-1]["rank"] == 9215
    assert client.get("/api/mosaic", params={**q, "page": 144}).status_code == 404


def test_channel_map_kernel_input_and_predictions(client: TestClient, image_id: str) -> None:
    info = client.get("/api/channel", params={"image_id": image_id, "layer_id": "conv_1", "channel": 41}).json()
    assert info["channel"] == 41 and info["channels"] == 64 and info["has_kernel"] and not info["scanned"]
    assert info["min"] <= info["mean"] <= info["max"]
    q = {"image_id": image_id, "layer_id": "conv_1", "channel": 41}
    assert Image.open(io.BytesIO(client.get("/api/channel/map.png", params=q).content)).size[0] >= 24
    assert client.get("/api/kernel.png", params={"layer_id": "conv_1", "channel": 41}).headers["content-type"] == "image/png"
    assert client.get("/api/kernel.png", params={"layer_id": "pool", "channel": 0}).status_code == 404
    assert Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/input.png").content)).size == (28, 28)
    preds = client.get(f"/api/images/{image_id}/predictions", params={"k": 3}).json()
    assert [r["rank"] for r in preds["rows"]] == [1, 2, 3]
    assert client.get("/api/channel", params={**q, "channel": 64}).status_code == 404


def test_cache_is_keyed_by_image_layer_and_normalisation(client: TestClient, image_id: str) -> None:
    explorer = client.app.api.state.explorer
    q = {"image_id": image_id, "layer_id": "relu_1", "norm": "layer", "contrast": 3}
    cold = client.get("/api/mosaic.png", params=q).content
    hits = explorer.pngs.hits
    assert client.get("/api/mosaic.png", params=q).content == cold
    assert explorer.pngs.hits == hits + 1
    other = client.get("/api/mosaic.png", params={**q, "norm": "channel"}).content
    assert other != cold  # another normalisation is another entry
    keys = [k for k in explorer.pictures._data if k[2] == "relu_1"]
    assert {k[0] for k in keys} == {explorer.fingerprint} and {k[3] for k in keys} >= {"layer", "channel"}


def test_upload_returns_a_server_id_and_dedupes(client: TestClient) -> None:
    data = CAT.read_bytes()
    first = client.post("/api/images", files={"file": ("cat.jpg", data, "image/jpeg")})
    assert first.status_code == 201 and first.json()["id"].startswith("img-")
    assert client.post("/api/images", files={"file": ("again.jpg", data, "image/jpeg")}).json()["id"] == first.json()["id"]
    assert client.post("/api/images", files={"file": ("x.png", b"not an image", "image/png")}).status_code == 400


def _wait(client: TestClient, job: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    seen = [job["progress"]]
    deadline = time.monotonic() + 60
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.02)
        job = client.get(f"/api/jobs/{job['id']}").json()
        seen.append(job["progress"])
    return job, seen


def test_maximize_job_reports_progress_then_is_cached(client: TestClient) -> None:
    job = client.post("/api/jobs", json={"kind": "maximize", "layer": "conv_1", "channel": 5, "steps": 8}).json()
    done, seen = _wait(client, job)
    assert done["state"] == "done" and done["progress"] == 1.0 and seen == sorted(seen)
    assert done["meta"]["steps"] == 8
    picture = Image.open(io.BytesIO(client.get(done["result"]).content))
    assert picture.width >= 28
    again = client.post("/api/jobs", json={"kind": "maximize", "layer": "conv_1", "channel": 5, "steps": 8}).json()
    assert again["id"] == done["id"] and again["state"] == "done"  # computed once


def test_attribute_job_and_job_errors(client: TestClient, image_id: str) -> None:
    job = client.post("/api/jobs", json={"kind": "attribute", "image": image_id, "method": "gradcam", "target": 3}).json()
    done, _ = _wait(client, job)
    assert done["state"] == "done" and done["meta"]["target"] == 3 and done["meta"]["layer"]
    assert client.post("/api/jobs", json={"kind": "attribute", "image": image_id, "method": "nope"}).status_code == 400
    assert client.post("/api/jobs", json={"kind": "maximize", "layer": "conv_1"}).status_code == 400
    assert client.get("/api/jobs/unknown").status_code == 404


def test_jobs_run_one_at_a_time(client: TestClient) -> None:
    runner = client.app.api.state.jobs
    jobs = [client.post("/api/jobs", json={"kind": "maximize", "layer": "conv_0", "channel": c, "steps": 6}).json()
            for c in range(3)]  # fmt: skip
    while any(j["state"] in ("queued", "running") for j in jobs):
        jobs = [client.get(f"/api/jobs/{j['id']}").json() for j in jobs]
        time.sleep(0.01)
    assert all(j["state"] == "done" for j in jobs)
    # one at a time: each job started after the one before it finished (from the runner's own clock; polling
    # the jobs one GET after another could see job 1 running, then job 2 running after job 1 ended)
    spans = sorted((job.started, job.finished) for job in (runner.get(j["id"]) for j in jobs) if job is not None)
    assert len(spans) == 3 and all(b[0] >= a[1] for a, b in itertools.pairwise(spans)), spans
    assert not runner.lock.locked()


def test_residual_net_layers_and_twice_called_modules() -> None:
    app = make_app(cs.Scope(ResNet18(), input_shape=(3, 32, 32)), images=[str(CAT)])
    with _client(app) as c:
        ident = c.get("/api/images").json()[0]["id"]
        layers = _layers(c)
        ids = [row["id"] for row in layers]
        assert "layer1.0.relu" in ids and "layer1.0.relu@1" in ids
        assert next(r for r in layers if r["id"] == "layer1.0.conv1")["group"] == ["layer1", "0"]
        for row in layers:
            meta = c.get("/api/mosaic", params={"image_id": ident, "layer_id": row["id"]}).json()
            assert len(meta["tiles"]) == min(64, row["channels"]), row["id"]


def test_keras_model_mosaics(keras: Any) -> None:
    from convscope.demo.models import keras_digits_model

    app = make_app(cs.Scope(keras_digits_model(seed=0)), images=[str(DIGIT)])
    with _client(app) as c:
        ident = c.get("/api/images").json()[0]["id"]
        layers = _layers(c)
        assert [r["channels"] for r in layers if r["id"] in ("conv_0", "conv_1")] == [32, 64]
        for row in layers:
            meta = c.get("/api/mosaic", params={"image_id": ident, "layer_id": row["id"]}).json()
            assert len(meta["tiles"]) == min(64, row["channels"]), row["id"]
        assert c.get("/api/kernel.png", params={"layer_id": "conv_1", "channel": 0}).status_code == 200
        # a deep-copied Keras model still runs its original layers: the job must use the shared scope
        job = c.post("/api/jobs", json={"kind": "maximize", "layer": "conv_1", "channel": 2, "steps": 4}).json()
        done, seen = _wait(c, job)
        assert done["state"] == "done" and done["progress"] == 1.0 and seen == sorted(seen), done["message"]
        assert c.get(done["result"]).headers["content-type"] == "image/png"


# -- the security table: one test per row -----------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "10.0.0.1"])
def test_foreign_host_header_is_refused(client: TestClient, host: str) -> None:
    r = client.get("/api/model", headers={"Host": host})
    assert r.status_code in (400, 421)


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1:8000", "[::1]:8000", "[::1]"])
def test_loopback_host_headers_are_served(client: TestClient, host: str) -> None:
    assert client.get("/api/model", headers={"Host": host}).status_code == 200


def test_missing_token_is_401(digit_app: Any) -> None:
    with TestClient(digit_app, base_url=BASE) as bare:
        assert bare.get("/api/model").status_code == 401
        assert bare.get("/api/openapi.json").status_code == 401
        assert bare.get("/").status_code == 200  # the page itself holds no data


def test_wrong_token_is_403(digit_app: Any, image_id: str) -> None:
    with TestClient(digit_app, base_url=BASE) as bare:
        assert bare.get("/api/model", headers={"X-Convscope-Token": "guess"}).status_code == 403
        assert bare.get(f"/api/images/{image_id}/thumb.png", params={"token": "guess"}).status_code == 403
        assert bare.get(f"/api/images/{image_id}/thumb.png", params={"token": digit_app.token}).status_code == 200


@pytest.mark.parametrize("ident", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                   "/etc/passwd", "%2Fetc%2Fpasswd", "img-0000000000000000", "C:\\Windows\\win.ini"])  # fmt: skip
def test_traversal_and_unknown_image_ids_are_404(client: TestClient, ident: str) -> None:
    assert client.get(f"/api/images/{ident}/input.png").status_code == 404
    q = {"image_id": ident.replace("%2F", "/").replace("%2f", "/"), "layer_id": "conv_1"}
    assert client.get("/api/mosaic", params=q).status_code == 404


def test_foreign_origin_on_state_changing_request_is_403(client: TestClient) -> None:
    files = {"file": ("d.png", DIGIT.read_bytes(), "image/png")}
    assert client.post("/api/images", files=files, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/images", files=files, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/api/images", files=files, headers={"Origin": "http://127.0.0.1:8000"}).status_code == 201


def test_streamed_1gb_body_is_413_without_reading_it(live: Server) -> None:
    """1 GiB sent chunked (no Content-Length): the server answers 413 once the 32 MiB cap is passed."""
    sent, chunk = 0, b"\0" * (1 << 20)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(f"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nX-Convscope-Token: {live.app.token}\r\n"
                  "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode())  # fmt: skip
        try:
            while sent < 1 << 30:
                s.sendall(frame)
                sent += len(chunk)
                if select.select([s], [], [], 0)[0]:
                    break
        except OSError:  # the server closed the connection after answering
            pass
        reply = s.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413")
    assert sent < 48 << 20  # the cap (32 MiB) plus socket buffers, never the whole gigabyte


def test_declared_1gb_body_is_413_before_any_byte_is_read(live: Server) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(f"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nX-Convscope-Token: {live.app.token}\r\n"
                  "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1073741824\r\n\r\n".encode())  # fmt: skip
        reply = s.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413")


def test_2000_multipart_parts_is_400(client: TestClient) -> None:
    boundary = "b0undary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode() for i in range(2000))
    body += f"--{boundary}--\r\n".encode()
    r = client.post("/api/images", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400


def test_png_declaring_20000_square_pixels_is_4xx(client: TestClient) -> None:
    bomb = _png_declaring(20_000, 20_000)
    assert len(bomb) < 200
    r = client.post("/api/images", files={"file": ("bomb.png", bomb, "image/png")})
    assert 400 <= r.status_code < 500 and "pixels" in r.json()["detail"]


def test_models_come_only_from_the_command_line(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    posts = sorted(p for p, ops in paths.items() if "post" in ops)
    assert posts == ["/api/images", "/api/jobs"]  # images and jobs; nothing loads a model


@pytest.fixture(scope="module")
def live(digit_app: Any) -> Iterator[Server]:
    server = Server(digit_app, host="127.0.0.1", port=0).start()
    yield server
    server.stop()


def _outside_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))  # no packet is sent; picks the outgoing interface
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_server_is_not_reachable_on_non_loopback_addresses(live: Server) -> None:
    assert live._server.config.host == "127.0.0.1"
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError), socket.create_connection((address, live.port), timeout=2):
        pass


def test_another_address_only_explicitly_with_a_warning() -> None:
    scope = cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28))
    with pytest.warns(UserWarning, match="not loopback"):
        server = cs.serve(scope, host="127.0.0.2", block=False)
    try:
        with socket.create_connection(("127.0.0.2", server.port), timeout=5) as s:
            s.sendall(f"GET /api/model HTTP/1.1\r\nHost: 127.0.0.2:{server.port}\r\n"
                      f"X-Convscope-Token: {server.app.token}\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
            assert s.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


# -- fuzzing over the OpenAPI schema ----------------------------------------------------------------------
def test_schemathesis_no_server_errors_and_responses_conform(digit_app: Any) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    headers = {"X-Convscope-Token": digit_app.token, "Host": "localhost"}
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", digit_app, headers=headers)
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    started, calls = time.monotonic(), []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case: Any) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case.call_and_validate(headers=headers, checks=checks)
            calls.append(case.operation.label)

        fuzz()
    assert len(set(calls)) == len(list(schema.get_all_operations())) >= 15  # every operation was called
    assert time.monotonic() - started < 60


# -- dataset scan and the command line ---------------------------------------------------------------------
def test_scan_top_patches_and_histogram() -> None:
    import numpy as np

    scope = cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28))
    rng = np.random.default_rng(0)
    scan = scope.scan(rng.integers(0, 255, (12, 28, 28), dtype=np.uint8), layers="conv_1", k=4, progress=False)
    app = make_app(scope, scan=scan)
    with _client(app) as c:
        assert c.get("/api/model").json()["scan"] == {"count": 12, "k": 4, "layers": ["conv_1"]}
        top = c.get("/api/scan/top", params={"layer_id": "conv_1", "channel": 7}).json()
        assert len(top["ids"]) == 4 and top["values"] == sorted(top["values"], reverse=True)
        for path in ("/api/scan/top.png", "/api/scan/histogram.png"):
            r = c.get(path, params={"layer_id": "conv_1", "channel": 7})
            assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).width > 0
        assert c.get("/api/scan/top", params={"layer_id": "conv_0", "channel": 0}).status_code == 404


@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_cli_serve_prints_one_url_with_a_token(tmp_path: Path, kind: str, request: Any) -> None:
    """``convscope serve`` on a PyTorch factory and on a saved ``.keras`` file: one URL whose token opens the API."""
    import os
    import re
    import subprocess
    import sys

    import httpx

    from convscope.cli import build_parser

    assert "serve" in build_parser()[1]
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "d.png").write_bytes(DIGIT.read_bytes())
    model = ["convscope.demo.models:torch_digits_model", "--input-shape", "1,28,28"]
    if kind == "keras":
        request.getfixturevalue("keras")
        from convscope.demo.models import keras_digits_model

        keras_digits_model(seed=0).save(tmp_path / "digits.keras")
        model = [str(tmp_path / "digits.keras")]
    cmd = [sys.executable, "-m", "convscope.cli", "serve", *model, "--images", str(tmp_path / "imgs"), "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KERAS_BACKEND": "torch"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.fullmatch(r"convscope explorer: (http://127\.0\.0\.1:(\d+)/\?token=([\w-]{40,}))\n", line)
        assert found, line
        base, token = f"http://127.0.0.1:{found.group(2)}", {"X-Convscope-Token": found.group(3)}
        page = httpx.get(found.group(1))
        assert page.status_code == 200 and "<title>convscope explorer</title>" in page.text
        r = httpx.get(f"{base}/api/images", headers=token)
        assert [i["name"] for i in r.json()] == ["d.png"]
        layers = {row["id"]: row["channels"] for row in httpx.get(f"{base}/api/model", headers=token).json()["layers"]}
        assert layers["conv_1"] == 64
        assert httpx.get(f"{base}/api/images").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- `convscope serve` errors: one line naming the flag, exit 2 (in-process) --------------------------------
_DIGITS = ["convscope.demo.models:torch_digits_model", "--input-shape", "1,28,28"]


def _serve_cli(capsys: Any, *extra: str) -> tuple[int, str]:
    from convscope.cli import main

    try:
        rc = main(["serve", *_DIGITS, *extra])
    except SystemExit as exc:  # argparse-time errors (e.g. --port 99999, before the model loads)
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    return rc, "".join(line for line in err.splitlines(keepends=True) if "loaded without --weights" not in line)


def _fake_serve(monkeypatch: Any) -> dict[str, Any]:
    """Replace the blocking ``serve`` by one that builds the app (images, scan) and records what it got."""
    import convscope.explorer as explorer

    got: dict[str, Any] = {}

    def fake(scope: Any, images: Any = None, **kw: Any) -> None:
        got.update(kw, images=images, app=make_app(scope, images=images, scan=kw["scan"]))

    monkeypatch.setattr(explorer, "serve", fake)
    return got


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_cli_serve_port_out_of_range_is_one_line(capsys: Any, port: str) -> None:
    rc, err = _serve_cli(capsys, f"--port={port}")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err and "Exception in thread" not in err
    shown = repr(port) if port == "http" else port
    assert err.startswith(f"convscope: error: --port: {shown} is not a port; pass "), err
    assert "0-65535" in err


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket is listening on for the test's duration."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_cli_serve_port_in_use_is_one_line(capsys: Any, taken_port: int) -> None:
    port = taken_port
    rc, err = _serve_cli(capsys, "--port", str(port))
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"convscope: error: could not listen on --port {port} at 127.0.0.1 (that port is in use)")
    assert "pass another --port, or --port 0 for a free one" in err


def test_server_start_on_a_taken_port_raises_listen_error(digit_app: Any, taken_port: int) -> None:
    from convscope.explorer import ListenError

    port = taken_port
    with pytest.raises(ListenError, match=rf"port={port} at 127\.0\.0\.1 \(that port is in use\)"):
        Server(digit_app, port=port).start()
    with pytest.raises(cs.errors.OptionError, match="port=70000 is not a port"):
        Server(digit_app, port=70000)


def _store(tmp_path: Path, seed: int = 0) -> Path:
    folder = tmp_path / "data" / "digits"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.open(DIGIT).rotate(30 * i).save(folder / f"d{i}.png")
    torch.manual_seed(seed)  # the CLI's factory call, torch_digits_model(), draws from the global state
    scope = cs.Scope(torch_digits_model(), input_shape=(1, 28, 28))
    scope.scan(tmp_path / "data", layers="conv_1", k=2, store=tmp_path / "scan", progress=False)
    return tmp_path / "scan"


def test_cli_serve_scan_opens_a_store_written_by_convscope_scan(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    store = _store(tmp_path)
    got = _fake_serve(monkeypatch)
    torch.manual_seed(0)
    rc, err = _serve_cli(capsys, "--scan", str(store))
    assert rc == 0, err
    assert isinstance(got["scan"], cs.Scan) and got["scan"].count == 3
    with _client(got["app"]) as c:
        assert c.get("/api/model").json()["scan"] == {"count": 3, "k": 2, "layers": ["conv_1"]}
        r = c.get("/api/scan/top.png", params={"layer_id": "conv_1", "channel": 3})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).width > 0
    # the same through the API: make_app / cs.serve take the store's path
    torch.manual_seed(0)
    scope = cs.Scope(torch_digits_model(), input_shape=(1, 28, 28))
    with _client(make_app(scope, scan=str(store))) as c:
        assert c.get("/api/model").json()["scan"]["count"] == 3


def test_cli_serve_scan_store_of_another_model_is_refused(tmp_path: Path, capsys: Any) -> None:
    store = _store(tmp_path, seed=1)
    torch.manual_seed(0)
    rc, err = _serve_cli(capsys, "--scan", str(store))
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"convscope: error: --scan {store} was scanned with another model"), err


def test_cli_serve_scan_image_folder_is_scanned_at_start(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "d.png").write_bytes(DIGIT.read_bytes())
    got = _fake_serve(monkeypatch)
    rc, err = _serve_cli(capsys, "--scan", str(tmp_path / "imgs"), "--scan-k", "1")
    assert rc == 0, err
    assert got["scan"].count == 1 and got["scan"].k == 1


@pytest.mark.parametrize("case", ["missing", "file", "empty"])
def test_cli_serve_bad_scan_is_one_line_naming_the_flag(tmp_path: Path, capsys: Any, case: str) -> None:
    path = tmp_path / "nope"
    if case == "file":
        path.write_text("x")
    elif case == "empty":
        path.mkdir()
    rc, err = _serve_cli(capsys, "--scan", str(path))
    assert rc == 2 and err.count("\n") == 1, err
    why = {"missing": ": no such folder", "file": " is a file, not a folder",
           "empty": " holds neither a manifest.json nor any image"}[case]  # fmt: skip
    assert err.startswith(f"convscope: error: --scan {path}{why}; pass a scan store written by `convscope scan"), err
    assert "data=" not in err and "Dataset" not in err


@pytest.mark.parametrize("case", ["missing", "not-an-image"])
def test_cli_serve_bad_images_is_one_line_naming_the_flag(tmp_path: Path, capsys: Any, case: str) -> None:
    path = tmp_path / ("nope" if case == "missing" else "file.png")
    if case == "not-an-image":
        path.write_text("not a picture")
    rc, err = _serve_cli(capsys, "--images", str(path))
    assert rc == 2 and err.count("\n") == 1, err
    why = ": no such file or folder" if case == "missing" else " is not an image Pillow can read"
    assert err.startswith(f"convscope: error: --images {path}{why}; pass a folder of images or an image file"), err
    assert "Error:" not in err and "ImageRefused" not in err


def test_cli_serve_images_folder_says_which_files_it_skipped(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "d.png").write_bytes(DIGIT.read_bytes())
    (folder / "notes.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: not counted
    got = _fake_serve(monkeypatch)
    rc, err = _serve_cli(capsys, "--images", str(folder))
    assert rc == 0, err
    assert err == f"convscope: warning: --images {folder}: skipped 1 file that is not an image Pillow can read: " \
                  "notes.txt\n"
    with _client(got["app"]) as c:
        assert [i["name"] for i in c.get("/api/images").json()] == ["d.png"]
    with pytest.warns(UserWarning, match=r"images='.*photos': skipped 1 file that is not an image"):
        make_app(cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28)), images=str(folder))


def test_large_pictures_are_stored_uncompressed_and_decode_exactly() -> None:
    """Past STORED_PIXELS a PNG is zlib-stored (about its raw size, fast to encode); both sizes decode to
    the same pixels."""
    import io

    import numpy as np
    from PIL import Image

    from convscope.explorer.views import STORED_PIXELS, png

    rng = np.random.default_rng(0)
    for side in (64, int(STORED_PIXELS**0.5) + 1):
        img = Image.fromarray(rng.integers(0, 4, (side, side), dtype=np.uint8), mode="L")
        data = png(img)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(img))
        assert (len(data) >= side * side) == (side * side > STORED_PIXELS)  # stored: no smaller than raw
