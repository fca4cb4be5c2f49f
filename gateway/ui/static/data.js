// What the Recordings, Fidelity and Trajectories views share: their stylesheet, numbers, raw downloads.
import { h } from "./dom.js";

export function useStyles() {
  if (!document.querySelector('link[data-styles="data"]')) {
    document.head.append(h("link", { rel: "stylesheet", href: "/ui/static/data.css", dataset: { styles: "data" } }));
  }
}

export function num(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export function pct(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// POST a JSON body and save the answer as a file (the page's api client reads JSON only).
export async function download(path, body, fallbackName) {
  const response = await fetch(`/ui/api${path}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Simgate-UI": "1" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error(data.error || `${response.status} ${response.statusText}`);
  }
  const name = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "")?.[1] || fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return { name, count: Number(response.headers.get("x-simgate-recordings") || 0) };
}

// Hand-over between views (e.g. Fidelity → Trajectories): what to open next, read once.
export function handOver(view, value) {
  sessionStorage.setItem(`simgate.open.${view}`, JSON.stringify(value));
  location.hash = `#/${view}`;
}

export function takeHandOver(view) {
  const raw = sessionStorage.getItem(`simgate.open.${view}`);
  sessionStorage.removeItem(`simgate.open.${view}`);
  return raw ? JSON.parse(raw) : null;
}
