// Talking to the explorer API: the per-launch token rides on every call (header, or ?token= for <img>).
const params = new URLSearchParams(location.search);
if (params.get("token")) sessionStorage.setItem("convscope-token", params.get("token"));
export const token = params.get("token") || sessionStorage.getItem("convscope-token") || "";

export function url(path, query = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  q.set("token", token);
  return `${path}?${q}`;
}

export async function get(path, query = {}) {
  const r = await fetch(url(path, query), { headers: { "X-Convscope-Token": token } });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.json().catch(() => ({}))).detail || ""}`);
  return r.json();
}

export async function post(path, body) {
  const isForm = body instanceof FormData;
  const r = await fetch(url(path), {
    method: "POST", body: isForm ? body : JSON.stringify(body),
    headers: isForm ? { "X-Convscope-Token": token } : { "X-Convscope-Token": token, "Content-Type": "application/json" },
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.json().catch(() => ({}))).detail || ""}`);
  return r.json();
}

// Poll a job until it is done, calling onProgress(fraction); resolves with the job.
export async function runJob(request, onProgress) {
  let job = await post("/api/jobs", request);
  while (job.state === "queued" || job.state === "running") {
    onProgress(job.progress, job);
    await new Promise((ok) => setTimeout(ok, 150));
    job = await get(`/api/jobs/${job.id}`);
  }
  onProgress(1, job);
  if (job.state !== "done") throw new Error(job.message || "job failed");
  return job;
}
