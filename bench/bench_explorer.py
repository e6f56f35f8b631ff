"""Explorer load on loopback: 8 concurrent clients browsing layers of a live server (bounded loops).

Reports p50/p95 latency of a cold layer mosaic (first request: forward pass + render + PNG) next to the
library's own forward pass + ``FeatureMaps.grid`` for that layer, p95 of cached mosaics over ``--requests``
requests, errors, and resident memory before/after. A benchmark, not a test::

    .venv/bin/python bench/bench_explorer.py                 # VGG16 (random init), 224x224, 13 conv layers
    .venv/bin/python bench/bench_explorer.py --model digits  # the demo's digit CNN
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import VGG16  # noqa: E402

import convscope as cs  # noqa: E402
from convscope.explorer import Server, make_app  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["vgg16", "digits"], default="vgg16")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model == "vgg16":
        scope = cs.Scope(VGG16().eval(), input_shape=(3, 224, 224))
    else:
        from convscope.demo.models import torch_digits_model

        scope = cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28))
    image = Path(cs.__file__).with_name("data") / ("cat.jpg" if args.model == "vgg16" else "digit.png")
    app = make_app(scope, images=[str(image)])
    server = Server(app, port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    headers = {"X-Convscope-Token": app.token}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
        model = c.get("/api/model").json()
        ident = c.get("/api/images").json()[0]["id"]
    layers = [r["id"] for r in model["layers"] if r["spatial"] and r["type"] in ("Conv2d", "Conv2D")]
    print(f"{args.model}: {len(layers)} conv layers, {args.clients} clients, torch threads {torch.get_num_threads()}")

    # reference: the library's own forward pass + grid for one layer (what a cold mosaic must do)
    reference = {}
    for name in layers:
        t = time.perf_counter()
        fm = scope.activations(image, layers=[name])[name]
        fm.grid(cols=8, cmap="viridis")
        reference[name] = time.perf_counter() - t

    errors: list[str] = []

    def get(client: httpx.Client, name: str, image_id: str) -> float:
        t = time.perf_counter()
        r = client.get("/api/mosaic.png", params={"image_id": image_id, "layer_id": name})
        if r.status_code != 200:
            errors.append(f"{name}: {r.status_code}")
        return time.perf_counter() - t

    def new_image(client: httpx.Client, seed: int) -> str:
        from PIL import Image

        pic = Image.open(image).convert("RGB")
        pic.putpixel((0, 0), (seed % 256, seed // 256 % 256, 7))  # new bytes, new sha256: nothing cached
        buf = io.BytesIO()
        pic.save(buf, format="PNG")
        return str(client.post("/api/images", files={"file": (f"{seed}.png", buf.getvalue(), "image/png")}).json()["id"])

    # cold, one client: the first request for a layer of a new image (one pass records every layer)
    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        alone = {name: get(client, name, new_image(client, i)) for i, name in enumerate(layers)}
    ratio = [alone[n] / reference[n] for n in layers]
    print(f"cold mosaic, 1 client: p50 {p(list(alone.values()), .5):.0f} ms, p95 {p(list(alone.values()), .95):.0f} ms;"
          f" library pass+grid of that layer p50 {p(list(reference.values()), .5):.0f} ms; ratio median "
          f"{statistics.median(ratio):.2f}x, max {max(ratio):.2f}x")  # fmt: skip

    # cold, 8 clients browsing different layers of one new image at once
    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        fresh = new_image(client, 9999)
    together: dict[str, float] = {}

    def cold_worker(names: list[str]) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
            for name in names:
                together[name] = get(client, name, fresh)

    threads = [threading.Thread(target=cold_worker, args=(layers[i :: args.clients],)) for i in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ratio = [together[n] / reference[n] for n in layers]
    print(f"cold mosaic, {args.clients} clients on one new image: p95 {p(list(together.values()), .95):.0f} ms; "
          f"ratio to pass+grid median {statistics.median(ratio):.2f}x, max {max(ratio):.2f}x")  # fmt: skip

    # cached: bounded loops, clients browsing layers round-robin (each layer drawn once first)
    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        for name in layers:
            get(client, name, ident)
    before = rss_mb()
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = args.requests // args.clients

    def cached_worker(k: int) -> None:
        mine = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for i in range(per_client):
                mine.append(get(client, layers[(i + k) % len(layers)], ident))
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=cached_worker, args=(k,)) for k in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    after = rss_mb()
    print(f"cached mosaic: {len(latencies)} requests in {wall:.1f}s ({len(latencies) / wall:.0f}/s), "
          f"p50 {p(latencies, .5):.1f} ms, p95 {p(latencies, .95):.1f} ms, max {max(latencies) * 1000:.1f} ms")  # fmt: skip
    print(f"memory: {before:.0f} MB before, {after:.0f} MB after {len(latencies)} cached requests "
          f"({after - before:+.0f} MB); errors: {len(errors)}")  # fmt: skip
    server.stop()


if __name__ == "__main__":
    main()
