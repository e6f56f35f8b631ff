"""Pydantic shapes of the explorer's JSON, so the OpenAPI schema describes every answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Error(BaseModel):
    detail: Any


class LayerInfo(BaseModel):
    id: str
    type: str
    output_shape: list[int | None] | None
    params: int
    channels: int | None
    spatial: bool
    viewable: bool
    group: list[str]


class ScanInfo(BaseModel):
    count: int
    k: int
    layers: list[str]


class ModelInfo(BaseModel):
    name: str
    framework: str
    fingerprint: str
    total_params: int
    trainable_params: int
    layers: list[LayerInfo]
    methods: list[str]
    normalizations: list[str]
    scan: ScanInfo | None
    max_upload_bytes: int
    max_pixels: int
    page_size: int


class ImageInfo(BaseModel):
    id: str
    name: str
    sha256: str
    width: int
    height: int


class Tile(BaseModel):
    channel: int
    rank: int
    x: int
    y: int
    w: int
    h: int
    mean: float | None
    max: float | None


class Mosaic(BaseModel):
    layer: str
    image: str
    channels: int
    page: int
    pages: int
    page_size: int
    normalize: str
    sort: str
    contrast: int
    width: int
    height: int
    vector: bool
    map_shape: list[int]
    tiles: list[Tile]
    warnings: list[str]


class ChannelInfo(BaseModel):
    layer: str
    channel: int
    channels: int
    image: str
    mean: float | None
    max: float | None
    min: float | None
    rank_by_mean: int
    map_shape: list[int]
    vector: bool
    has_kernel: bool
    scanned: bool


class PredictionRow(BaseModel):
    rank: int
    index: int
    prob: float | None
    name: str | None


class Predictions(BaseModel):
    image: str
    k: int
    rows: list[PredictionRow]


class ScanTop(BaseModel):
    layer: str
    channel: int
    by: str
    ids: list[str]
    values: list[float | None]
    positions: list[list[int]]
    captions: list[str]


class JobRequest(BaseModel):
    kind: Literal["maximize", "attribute"]
    layer: str | None = Field(default=None, max_length=200)
    channel: int | None = Field(default=None, ge=0, le=1_000_000)
    image: str | None = Field(default=None, max_length=64)
    method: str | None = Field(default=None, max_length=64)
    target: int | None = Field(default=None, ge=0, le=1_000_000)
    steps: int | None = Field(default=None, ge=1, le=1024)


class JobInfo(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "done", "error"]
    progress: float
    message: str
    elapsed_s: float
    result: str | None
    meta: dict[str, Any]
