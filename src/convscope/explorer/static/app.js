// convscope explorer: layer list (left), channel grid (centre), channel inspector (right), top bar.
import { get, post, url, runJob } from "./api.js";
import { parse, go } from "./route.js";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...kids);
  return node;
};
const fmt = (v) => (v === null || v === undefined ? "—" : Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.01) ? v.toExponential(2) : v.toFixed(3));
const status = (text) => { $("#status").textContent = text; };

let model = null;
let images = [];
let lastGrid = "";
let lastInspector = "";
let lastTop = "";

async function loadImages() { images = await get("/api/images"); }

async function upload(files) {
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const info = await post("/api/images", form);
      await loadImages();
      go({ img: info.id });
    } catch (err) { status(`upload refused: ${err.message}`); }
  }
}

// -- left: the layer list, nested blocks collapsed --------------------------------------------------------
function renderLayers(state) {
  const box = $("#layers");
  const filter = $("#layer-filter").value.trim().toLowerCase();
  box.replaceChildren();
  const groups = new Map([["", box]]);
  const holder = (path) => {
    const key = path.join(".");
    if (groups.has(key)) return groups.get(key);
    const parent = holder(path.slice(0, -1));
    const open = !!filter || (state.layer || "").startsWith(key + ".");
    const det = el("details", { open, "data-group": key }, el("summary", { text: path[path.length - 1] }));
    parent.append(det);
    groups.set(key, det);
    return det;
  };
  for (const layer of model.layers) {
    const text = `${layer.id} ${layer.type}`.toLowerCase();
    if (filter && !text.includes(filter)) continue;
    const shape = layer.output_shape ? `(${layer.output_shape.map((d) => d ?? "N").join(", ")})` : "?";
    const button = el("button", {
      class: "layer" + (layer.id === state.layer ? " current" : ""), "data-layer": layer.id, disabled: !layer.viewable,
      title: `${layer.id} (${layer.type})`, onclick: () => go({ layer: layer.id, channel: null, page: 0 }),
    }, el("span", { text: layer.id.split(".").pop() }), el("span", { class: "params", text: layer.params.toLocaleString() }),
    el("span", { class: "meta", text: `${layer.type} ${shape}` }));
    holder(layer.group).append(button);
  }
}

// -- centre: the channel grid, one mosaic per page ---------------------------------------------------------
function mosaicFigure(meta, query, state) {
  const shown = Math.max(meta.width, Math.min(640, meta.width * 2));  // small mosaics drawn up to 2x, pixelated
  const wrap = el("div", { class: "mosaic", "data-page": meta.page, style: `width:${shown}px;max-width:100%` });
  const img = el("img", { src: url("/api/mosaic.png", query), width: meta.width, height: meta.height,
                          alt: `${meta.layer}: ${meta.tiles.length} channels, page ${meta.page + 1} of ${meta.pages}` });
  wrap.append(img);
  for (const t of meta.tiles) {
    const pct = (v, of) => `${(100 * v) / of}%`;
    const tile = el("button", {
      class: "tile" + (t.channel === state.channel ? " current" : ""), "data-channel": t.channel,
      title: `channel ${t.channel} · rank ${t.rank + 1} · mean ${fmt(t.mean)} · max ${fmt(t.max)}`,
      style: `left:${pct(t.x, meta.width)};top:${pct(t.y, meta.height)};width:${pct(t.w, meta.width)};height:${pct(t.h, meta.height)}`,
      onclick: () => go({ channel: t.channel }),
    }, el("span", { text: t.channel }));
    wrap.append(tile);
  }
  return wrap;
}

async function renderGrid(state) {
  const key = JSON.stringify([state.layer, state.img, state.norm, state.sort, state.contrast, state.page, state.all]);
  if (key === lastGrid) {
    document.querySelectorAll(".tile").forEach((t) => t.classList.toggle("current", Number(t.dataset.channel) === state.channel));
    return;
  }
  lastGrid = key;
  const head = $("#grid-head"), grid = $("#grid");
  if (!state.layer || !state.img) { head.replaceChildren(); return; }
  const layer = model.layers.find((l) => l.id === state.layer);
  if (!layer) { head.replaceChildren(el("span", { class: "warn", text: `no layer ${state.layer}` })); return; }
  const base = { image_id: state.img, layer_id: state.layer, norm: state.norm, sort: state.sort, contrast: state.contrast };
  const pages = Math.ceil(layer.channels / model.page_size);
  const page = Math.min(Number(state.page) || 0, pages - 1);
  const showAll = state.all === "1";
  const wanted = showAll && layer.channels <= 512 ? [...Array(pages).keys()] : [page];
  status(`loading ${state.layer}…`);
  const metas = await Promise.all(wanted.map((p) => get("/api/mosaic", { ...base, page: p })));
  if (key !== lastGrid) return;  // a newer view replaced this one meanwhile
  const sort = el("select", { "data-testid": "sort", onchange: (e) => go({ sort: e.target.value, page: 0 }) },
    ...["mean", "max", "index"].map((s) => el("option", { value: s, selected: s === state.sort, text: `by ${s}` })));
  const search = el("input", { type: "number", min: 0, max: layer.channels - 1, placeholder: "channel #", "data-testid": "search",
    onkeydown: (e) => { if (e.key === "Enter" && e.target.value !== "") go({ channel: Math.min(Number(e.target.value), layer.channels - 1) }); } });
  const all = el("label", {}, el("input", { type: "checkbox", checked: showAll, "data-testid": "show-all",
    onchange: (e) => go({ all: e.target.checked ? "1" : "0", page: 0 }) }), ` show all ${layer.channels}`);
  const parts = [el("h2", { text: `${layer.id} · ${layer.type}` }),
    el("span", { class: "stats", text: `${layer.channels} ${metas[0].vector ? "units" : "channels"}, ${metas[0].map_shape.join("×")} maps, ${showAll ? "all" : `top ${Math.min(layer.channels, model.page_size)}`} by ${state.sort}` }),
    sort, search, all];
  if (layer.channels > model.page_size && (!showAll || layer.channels > 512)) {
    const pager = el("span", { class: "pager", "data-testid": "pager" },
      el("button", { disabled: page === 0, onclick: () => go({ page: page - 1 }), text: "‹" }),
      ` page ${page + 1} of ${pages} `,
      el("button", { disabled: page >= pages - 1, onclick: () => go({ page: page + 1 }), text: "›" }));
    parts.push(pager);
  }
  head.replaceChildren(...parts);
  const said = [...new Set(metas.flatMap((m) => m.warnings))];
  grid.replaceChildren(...said.map((w) => el("p", { class: "warn", text: w })),
    ...metas.map((m) => mosaicFigure(m, { ...base, page: m.page }, state)));
  status("");
}

// -- right: the inspector for one channel -------------------------------------------------------------------
function overlayFigure(imageId, state, caption) {
  const q = { image_id: imageId, layer_id: state.layer, channel: state.channel, norm: state.norm, contrast: state.contrast };
  const opacity = $("#inspector").dataset.opacity || "0.7";
  return el("figure", {}, el("div", { class: "over" },
    el("img", { src: url(`/api/images/${imageId}/input.png`), alt: `input ${caption}` }),
    el("img", { class: "map", src: url("/api/channel/map.png", q), style: `opacity:${opacity}`,
                alt: `${state.layer} channel ${state.channel} over ${caption}` }),
    el("figcaption", { text: caption })));
}

async function featureVis(box, state) {
  const bar = el("div", { class: "progress", "data-testid": "vis-progress" }, el("div"));
  box.replaceChildren(bar);
  try {
    const job = await runJob({ kind: "maximize", layer: state.layer, channel: state.channel },
      (p) => { bar.firstChild.style.width = `${Math.round(p * 100)}%`; });
    box.replaceChildren(el("img", { class: "vis", "data-testid": "vis", src: url(job.result),
      alt: `feature visualisation of ${state.layer} channel ${state.channel}, objective ${fmt(job.meta.value)}` }));
  } catch (err) { box.replaceChildren(el("p", { class: "warn", text: err.message })); }
}

async function renderInspector(state) {
  const box = $("#inspector");
  const key = JSON.stringify([state.layer, state.channel, state.img, state.cmp, state.norm, state.contrast]);
  if (key === lastInspector) return;
  lastInspector = key;
  if (state.layer === null || state.channel === null || !state.img) {
    box.replaceChildren(el("p", { class: "hint", text: "Click a channel to inspect it." }));
    return;
  }
  const info = await get("/api/channel", { image_id: state.img, layer_id: state.layer, channel: state.channel, norm: state.norm });
  if (key !== lastInspector) return;
  const name = (id) => (images.find((i) => i.id === id) || { name: id }).name;
  const slider = el("input", { type: "range", min: 0, max: 1, step: 0.05, value: box.dataset.opacity || "0.7", "data-testid": "opacity",
    oninput: (e) => { box.dataset.opacity = e.target.value; box.querySelectorAll("img.map").forEach((m) => { m.style.opacity = e.target.value; }); } });
  const pair = el("div", { class: "pair" }, overlayFigure(state.img, state, name(state.img)));
  if (state.cmp && state.cmp !== state.img && images.some((i) => i.id === state.cmp)) pair.append(overlayFigure(state.cmp, state, name(state.cmp)));
  const compare = el("select", { "data-testid": "compare", onchange: (e) => go({ cmp: e.target.value }) },
    el("option", { value: "", text: "compare with…" }),
    ...images.filter((i) => i.id !== state.img).map((i) => el("option", { value: i.id, selected: i.id === state.cmp, text: i.name })));
  const parts = [
    el("h2", { "data-testid": "inspector-title", text: `${state.layer} · channel ${state.channel}` }),
    el("p", { class: "stats", text: `rank ${info.rank_by_mean + 1} of ${info.channels} by mean · mean ${fmt(info.mean)} · max ${fmt(info.max)} · min ${fmt(info.min)} · normalised per ${state.norm}` }),
    el("h3", { text: "Map over the input" }), el("label", {}, "opacity ", slider), " ", compare, pair,
  ];
  if (info.has_kernel) {
    parts.push(el("h3", { text: "Kernel" }), el("img", { class: "kernel", "data-testid": "kernel",
      src: url("/api/kernel.png", { layer_id: state.layer, channel: state.channel }), alt: `kernel of ${state.layer} channel ${state.channel}` }));
  }
  const visBox = el("div", { "data-testid": "vis-box" }, el("button", { "data-testid": "vis-run", text: "Compute feature visualisation",
    onclick: () => featureVis(visBox, state) }));
  parts.push(el("h3", { text: "Feature visualisation" }), visBox);
  if (info.scanned) {
    const q = { layer_id: state.layer, channel: state.channel };
    parts.push(el("h3", { text: `Dataset top-${model.scan.k} (patches)` }),
      el("img", { class: "top", "data-testid": "scan-top", src: url("/api/scan/top.png", q), alt: `dataset top images of ${state.layer} channel ${state.channel}` }),
      el("img", { class: "top", "data-testid": "scan-hist", src: url("/api/scan/histogram.png", q), alt: `histogram of ${state.layer} channel ${state.channel} over the dataset` }));
  }
  parts.push(el("h3", { text: "Attribution" }), el("div", { id: "att-box", "data-testid": "att-box" }, el("p", { class: "hint", text: "Choose a method and press Explain." })));
  box.replaceChildren(...parts);
}

// -- top bar -------------------------------------------------------------------------------------------------
async function renderTop(state) {
  $("#norm").value = state.norm;
  $("#contrast").value = state.contrast;
  $("#method").value = state.method;
  if ($("#target") !== document.activeElement) $("#target").value = state.target;
  $("#thumbs").replaceChildren(...images.map((i) => el("button", {
    class: (i.id === state.img ? "current" : "") + (i.id === state.cmp ? " compare" : ""), title: `${i.name} (${i.width}×${i.height}); shift-click to compare`,
    "data-image": i.id, onclick: (e) => go(e.shiftKey ? { cmp: i.id } : { img: i.id }),
  }, el("img", { src: url(`/api/images/${i.id}/thumb.png`), alt: i.name }))));
  if (!state.img || state.img === lastTop) return;
  lastTop = state.img;
  const preds = await get(`/api/images/${state.img}/predictions`, { k: 5 });
  $("#preds").replaceChildren(...preds.rows.map((r) => el("li", { text: `${r.rank}. ${r.name ?? `class ${r.index}`} ${(100 * r.prob).toFixed(1)}%` })));
}

async function explain() {
  const state = parse();
  if (!state.img) return;
  let box = $("#att-box");
  if (!box) { $("#inspector").replaceChildren(el("h3", { text: "Attribution" }), box = el("div", { id: "att-box", "data-testid": "att-box" })); lastInspector = ""; }
  const bar = el("div", { class: "progress", "data-testid": "att-progress" }, el("div"));
  box.replaceChildren(bar);
  const target = state.target === "" ? null : Number(state.target);
  try {
    const job = await runJob({ kind: "attribute", image: state.img, method: state.method, target },
      (p) => { bar.firstChild.style.width = `${Math.round(p * 100)}%`; });
    box.replaceChildren(el("img", { class: "att", "data-testid": "att", src: url(job.result),
      alt: `${job.meta.method} for class ${job.meta.target}${job.meta.layer ? ` at ${job.meta.layer}` : ""}` }),
      el("p", { class: "stats", text: `${job.meta.method} · class ${job.meta.target}${job.meta.layer ? ` · layer ${job.meta.layer}` : ""}` }));
  } catch (err) { box.replaceChildren(el("p", { class: "warn", text: err.message })); }
}

// -- wiring --------------------------------------------------------------------------------------------------
async function render() {
  const state = parse();
  if (!state.img && images.length) { go({ img: images[0].id }, { replace: true }); return; }
  renderLayers(state);
  try {
    await Promise.all([renderTop(state), renderGrid(state), renderInspector(state)]);
    document.body.dataset.ready = location.hash;
  } catch (err) { status(err.message); lastGrid = lastInspector = ""; }
}

async function main() {
  model = await get("/api/model");
  $("#model-name").textContent = `${model.name} (${model.framework}) · ${model.total_params.toLocaleString()} params`;
  $("#method").replaceChildren(...model.methods.map((m) => el("option", { value: m, text: m })));
  await loadImages();
  $("#file").addEventListener("change", (e) => upload([...e.target.files]));
  $("#layer-filter").addEventListener("input", () => renderLayers(parse()));
  $("#norm").addEventListener("change", (e) => go({ norm: e.target.value }));
  $("#contrast").addEventListener("change", (e) => go({ contrast: e.target.value }, { replace: true }));
  $("#method").addEventListener("change", (e) => go({ method: e.target.value }, { replace: true }));
  $("#target").addEventListener("change", (e) => go({ target: e.target.value }, { replace: true }));
  $("#explain").addEventListener("click", explain);
  const drop = $("#drop");
  window.addEventListener("dragover", (e) => { e.preventDefault(); drop.hidden = false; });
  window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.hidden = true; });
  window.addEventListener("drop", (e) => { e.preventDefault(); drop.hidden = true; upload([...e.dataTransfer.files]); });
  window.addEventListener("hashchange", render);
  await render();
}

main().catch((err) => status(err.message));
