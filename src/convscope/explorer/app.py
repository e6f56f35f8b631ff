"""The explorer's FastAPI app: JSON views and PNG pictures of one scope, behind :class:`~.security.Guard`.

Every answer comes from :class:`~convscope.explorer.views.Explorer`, which calls the library; models come only
from the command line or ``cs.serve(scope)``, never from a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from convscope.errors import ConvscopeError
from convscope.explorer import schemas as S
from convscope.explorer.jobs import Busy, JobRunner
from convscope.explorer.security import Guard, Policy
from convscope.explorer.state import MAX_PIXELS, ImageRefused, StoredImage
from convscope.explorer.tasks import attribute_work, maximize_work
from convscope.explorer.views import PAGE, Explorer, Norm, Order

STATIC = Path(__file__).with_name("static")
MAX_PARTS = 8
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": S.Error} for code in (400, 401, 403, 404, 409, 413, 422, 429)
}
_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG picture"}}
_UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}

ImageId = Annotated[str, Query(max_length=64, description="a server-issued image id (img-...)")]
LayerId = Annotated[str, Query(max_length=200, description="a layer id from /api/model")]
Channel = Annotated[int, Query(ge=0, le=1_000_000)]
Contrast = Annotated[int, Query(ge=0, le=20, description="clip this percentile at each end (0: min-max)")]


def create_app(explorer: Explorer, *, token: str, extra_hosts: tuple[str, ...] = (),
               max_body: int = 32 * 1024 * 1024) -> Guard:  # fmt: skip
    """The ASGI app (FastAPI wrapped in the security guard) serving ``explorer``; ``.api`` is the FastAPI app."""
    api = FastAPI(title="convscope explorer", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")  # fmt: skip
    api.state.explorer = explorer
    api.state.jobs = JobRunner(explorer.scope, explorer.model_lock)
    api.state.max_body = max_body
    api.include_router(_router(explorer, api.state.jobs, max_body))

    @api.exception_handler(ConvscopeError)
    async def _library_error(request: Request, exc: ConvscopeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @api.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    guard = Guard(api, Policy(token=token, max_body=max_body, extra_hosts=extra_hosts))
    guard.api = api  # type: ignore[attr-defined]
    return guard


def _router(ex: Explorer, jobs: JobRunner, max_body: int) -> APIRouter:  # noqa: C901 - one route each
    r = APIRouter(prefix="/api", responses=_ERRORS)

    def image(ident: str) -> StoredImage:
        found = ex.images.get(ident)
        if found is None:
            raise HTTPException(404, "unknown image id; ids come from GET/POST /api/images")
        return found

    def layer(ident: str, *, channel: int | None = None) -> str:
        entry = ex.layers.get(ident)
        if entry is None or entry.channels is None:
            raise HTTPException(404, f"unknown or unviewable layer {ident[:80]!r}; see /api/model")
        if channel is not None and channel >= entry.channels:
            raise HTTPException(404, f"layer {ident!r} has {entry.channels} channels; got {channel}")
        return ident

    @r.get("/model", response_model=S.ModelInfo)
    def model() -> dict[str, Any]:
        from convscope.attribution import methods

        summary = ex.summary
        scan = None if ex.scan is None else {"count": int(ex.scan.count), "k": int(ex.scan.k),
                                               "layers": list(ex.scan.layers)}  # fmt: skip
        return {"name": summary.model_name, "framework": summary.framework, "fingerprint": ex.fingerprint,
                "total_params": summary.total_params, "trainable_params": summary.trainable_params,
                "layers": [e.info() for e in ex.layers.values()], "methods": list(methods()),
                "normalizations": [n.value for n in Norm], "scan": scan, "max_upload_bytes": max_body,
                "max_pixels": MAX_PIXELS, "page_size": PAGE}  # fmt: skip

    @r.get("/images", response_model=list[S.ImageInfo])
    def images() -> list[dict[str, Any]]:
        return [i.info() for i in ex.images.all()]

    @r.post("/images", response_model=S.ImageInfo, status_code=201, openapi_extra=_UPLOAD)
    async def upload(request: Request) -> dict[str, Any]:
        form = await request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
        try:
            file = form.get("file")
            if file is None or isinstance(file, str):
                raise HTTPException(400, "send one image as the multipart field 'file'")
            data = await file.read()
            name = file.filename or "image"
        finally:
            await form.close()
        try:
            return ex.images.add(data, name).info()
        except ImageRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None

    @r.get("/images/{image_id}/thumb.png", response_class=Response, responses=_PNG)
    def thumb(image_id: str) -> Response:
        return _png(ex.thumbnail(image(image_id)))

    @r.get("/images/{image_id}/input.png", response_class=Response, responses=_PNG)
    def input_picture(image_id: str) -> Response:
        return _png(ex.input_picture(image(image_id)))

    @r.get("/images/{image_id}/predictions", response_model=S.Predictions)
    def predictions(image_id: str, k: Annotated[int, Query(ge=1, le=100)] = 5) -> dict[str, Any]:
        return ex.predictions(image(image_id), k)

    @r.get("/mosaic", response_model=S.Mosaic)
    def mosaic(image_id: ImageId, layer_id: LayerId, norm: Norm = Norm.CHANNEL, sort: Order = Order.MEAN,
               page: Annotated[int, Query(ge=0, le=100_000)] = 0, contrast: Contrast = 0) -> dict[str, Any]:  # fmt: skip
        return _page(image_id, layer_id, norm, sort, page, contrast)[1]

    @r.get("/mosaic.png", response_class=Response, responses=_PNG)
    def mosaic_png(image_id: ImageId, layer_id: LayerId, norm: Norm = Norm.CHANNEL, sort: Order = Order.MEAN,
                   page: Annotated[int, Query(ge=0, le=100_000)] = 0, contrast: Contrast = 0) -> Response:  # fmt: skip
        return _png(_page(image_id, layer_id, norm, sort, page, contrast)[0])

    def _page(image_id: str, layer_id: str, norm: Norm, sort: Order, page: int, contrast: int) -> Any:
        img, name = image(image_id), layer(layer_id)
        entry = ex.layers[name]
        if page * PAGE >= (entry.channels or 0):
            raise HTTPException(404, f"page {page} is past the last page of {name!r}")
        return ex.page(img, name, norm, sort, contrast, page)

    @r.get("/channel", response_model=S.ChannelInfo)
    def channel(image_id: ImageId, layer_id: LayerId, channel: Channel, norm: Norm = Norm.CHANNEL) -> dict[str, Any]:
        return ex.channel_info(image(image_id), layer(layer_id, channel=channel), channel, norm)

    @r.get("/channel/map.png", response_class=Response, responses=_PNG)
    def channel_map(image_id: ImageId, layer_id: LayerId, channel: Channel, norm: Norm = Norm.CHANNEL,
                    contrast: Contrast = 0) -> Response:  # fmt: skip
        return _png(ex.channel_map(image(image_id), layer(layer_id, channel=channel), channel, norm, contrast))

    @r.get("/kernel.png", response_class=Response, responses=_PNG)
    def kernel(layer_id: LayerId, channel: Channel) -> Response:
        data = ex.kernel(layer(layer_id, channel=channel), channel)
        if data is None:
            raise HTTPException(404, f"layer {layer_id!r} has no 2-D convolution kernel")
        return _png(data)

    def scanned(layer_id: str, channel: int) -> str:
        name = layer(layer_id, channel=channel)
        if not ex.scanned(name):
            raise HTTPException(404, "no scan is loaded for this layer (convscope serve --scan DIR)")
        return name

    @r.get("/scan/top", response_model=S.ScanTop)
    def scan_top(layer_id: LayerId, channel: Channel, by: Order = Order.MAX) -> dict[str, Any]:
        name, by_ = scanned(layer_id, channel), "mean" if by is Order.MEAN else "max"
        top = ex.scan.top(name, channel, by=by_)
        return {"layer": name, "channel": channel, "by": by_, "ids": [str(i) for i in top.ids],
                "values": [float(v) for v in top.values], "positions": [list(p) for p in top.positions],
                "captions": top.captions()}  # fmt: skip

    @r.get("/scan/top.png", response_class=Response, responses=_PNG)
    def scan_png(layer_id: LayerId, channel: Channel, by: Order = Order.MAX, patches: bool = True) -> Response:
        name, by_ = scanned(layer_id, channel), "mean" if by is Order.MEAN else "max"
        key = ("scan", ex.fingerprint, name, channel, by_, patches)
        from convscope.explorer.views import png

        return _png(ex.pngs.get_or_make(key, lambda: png(ex.scan.top(name, channel, by=by_).grid(patches=patches)), len))

    @r.get("/scan/histogram.png", response_class=Response, responses=_PNG)
    def scan_histogram(layer_id: LayerId, channel: Channel) -> Response:
        from convscope.explorer.views import png

        name = scanned(layer_id, channel)
        return _png(ex.pngs.get_or_make(("hist", ex.fingerprint, name, channel),
                                        lambda: png(ex.scan.stats(name).histogram(channel)), len))  # fmt: skip

    @r.post("/jobs", response_model=S.JobInfo, status_code=202)
    def submit(request: S.JobRequest) -> dict[str, Any]:
        try:
            if request.kind == "maximize":
                if request.layer is None or request.channel is None:
                    raise HTTPException(400, "a maximize job needs layer and channel")
                name = layer(request.layer, channel=request.channel)
                steps = min(request.steps or ex.steps, ex.max_steps)
                key: tuple[Any, ...] = ("maximize", ex.fingerprint, name, request.channel, steps)
                return jobs.submit("maximize", key, maximize_work(name, request.channel, steps)).info()
            if request.image is None:
                raise HTTPException(400, "an attribute job needs an image id")
            from convscope.attribution import methods

            method = request.method or "gradcam"
            if method not in methods():
                raise HTTPException(400, f"unknown method {method!r}; see /api/model")
            pic = image(request.image)
            key = ("attribute", ex.fingerprint, pic.sha256, method, request.target)
            return jobs.submit("attribute", key, attribute_work(pic.picture, method, request.target)).info()
        except Busy as exc:
            raise HTTPException(429, str(exc)) from None

    @r.get("/jobs/{job_id}", response_model=S.JobInfo)
    def job(job_id: str) -> dict[str, Any]:
        found = jobs.get(job_id)
        if found is None:
            raise HTTPException(404, "unknown job id")
        return found.info()

    @r.get("/jobs/{job_id}/result.png", response_class=Response, responses=_PNG)
    def job_result(job_id: str) -> Response:
        found = jobs.get(job_id)
        if found is None:
            raise HTTPException(404, "unknown job id")
        if found.result is None:
            raise HTTPException(409, f"job is {found.state}" + (f": {found.message}" if found.message else ""))
        return _png(found.result)

    return r


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
