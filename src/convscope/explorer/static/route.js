// The view state lives in the URL hash: #/layer/<id>/channel/<c>?img=..&cmp=..&norm=..&sort=..&contrast=..&page=..&all=..
export const DEFAULTS = { img: "", cmp: "", norm: "channel", sort: "mean", contrast: "0", page: "0", all: "0",
                          method: "gradcam", target: "" };

export function parse(hash = location.hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const state = { layer: null, channel: null, ...DEFAULTS };
  for (let i = 0; i + 1 < parts.length; i += 2) {
    if (parts[i] === "layer") state.layer = parts[i + 1];
    if (parts[i] === "channel" && /^\d+$/.test(parts[i + 1])) state.channel = Number(parts[i + 1]);
  }
  for (const [k, v] of new URLSearchParams(query)) if (k in DEFAULTS) state[k] = v;
  return state;
}

export function format(state) {
  let path = "#/";
  if (state.layer !== null) path += `layer/${encodeURIComponent(state.layer)}`;
  if (state.layer !== null && state.channel !== null) path += `/channel/${state.channel}`;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(DEFAULTS)) if (state[k] !== undefined && String(state[k]) !== v) q.set(k, state[k]);
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

// push: a new history entry (back/forward walk it); replace: same entry (sliders).
export function go(change, { replace = false } = {}) {
  const next = format({ ...parse(), ...change });
  if (next === location.hash) return;
  if (replace) {
    history.replaceState(null, "", next);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    location.hash = next;
  }
}
