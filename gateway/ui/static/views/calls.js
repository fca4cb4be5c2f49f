// Live calls: a table fed by server-sent events (newest first), filters, and a call's full detail on click.
import { fmtMs, fmtTime, h, json } from "../dom.js";

const MAX_ROWS = 500;
const COLUMNS = ["time", "client", "session", "server", "tool", "mode", "source", "latency", "outcome"];

export async function render(root, api) {
  const calls = []; // newest first, at most MAX_ROWS
  const filters = { server: "", tool: "", mode: "", source: "", outcome: "", text: "" };
  let paused = false;
  let selected = null; // the id of the call whose detail is shown
  let dropped = 0;
  const state = h("span.badge", { id: "stream-state" }, "connecting");
  const counts = h("span.muted", { id: "call-counts" });
  const body = h("tbody");
  const detail = h("div.detail", { id: "call-detail" }, h("p.muted", {}, "Click a call to see its arguments and result."));

  const input = (name, placeholder) => h("input", {
    type: "search", placeholder, dataset: { filter: name },
    oninput: (e) => { filters[name] = e.target.value.trim().toLowerCase(); draw(); },
  });
  const choice = (name, options) => h("select", {
    dataset: { filter: name }, onchange: (e) => { filters[name] = e.target.value; draw(); },
  }, h("option", { value: "" }, `any ${name}`), options.map((o) => h("option", { value: o }, o)));

  root.append(
    h("h2", {}, "Live calls ", state),
    h("div.toolbar", {},
      input("server", "server"), input("tool", "tool"),
      choice("mode", ["live", "replay", "simulated", "hybrid", "shadow"]),
      choice("source", ["live", "cache", "simulator"]),
      choice("outcome", ["ok", "tool_error", "rpc_error", "error"]),
      input("text", "client, session, arguments…"),
      h("button", { type: "button", id: "pause", onclick: (e) => {
        paused = !paused; e.target.textContent = paused ? "Resume" : "Pause"; if (!paused) draw();
      } }, "Pause"),
      h("button", { type: "button", onclick: () => { calls.length = 0; draw(); } }, "Clear"),
      counts),
    h("table.grid", { id: "calls" }, h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", {}, c)))), body),
    detail,
  );

  // ok, tool_error, rpc_error (any JSON-RPC code: the outcome says which) or error
  const kind = (call) => (String(call.outcome).startsWith("rpc_error") ? "rpc_error" : call.outcome);

  function matches(call) {
    const has = (value, wanted) => !wanted || String(value ?? "").toLowerCase().includes(wanted);
    if (!has(call.server, filters.server) || !has(call.tool, filters.tool)) return false;
    if (filters.mode && call.mode !== filters.mode) return false;
    if (filters.source && call.source !== filters.source) return false;
    if (filters.outcome && kind(call) !== filters.outcome) return false;
    if (filters.text) {
      const hay = `${call.client ?? ""} ${call.session ?? ""} ${JSON.stringify(call.arguments)}`.toLowerCase();
      if (!hay.includes(filters.text)) return false;
    }
    return true;
  }

  function open(call) {
    selected = call.id;
    for (const tr of body.querySelectorAll("tr.selected")) tr.classList.remove("selected");
    body.querySelector(`tr[data-id="${call.id}"]`)?.classList.add("selected");
    detail.replaceChildren(
      h("h3", {}, `${call.server} / ${call.tool}`),
      h("p.muted", {}, `${fmtTime(call.time)} · ${call.mode ?? "?"} · source ${call.source ?? "–"} · `
        + `${fmtMs(call.latency_ms)} · ${call.outcome}` + (call.cache_key ? ` · key ${call.cache_key}` : "")),
      h("h4", {}, "arguments"), json(call.arguments),
      ...(call.error ? [h("h4", {}, "error"), json(call.error)] : [h("h4", {}, "result"), json(call.result)]),
    );
  }

  function row(call) {
    return h(`tr.outcome-${kind(call)}${call.id === selected ? ".selected" : ""}`, {
      dataset: { id: call.id, source: call.source ?? "" }, tabindex: "0",
      onclick: () => open(call), onkeydown: (e) => { if (e.key === "Enter") open(call); },
    },
      h("td", {}, fmtTime(call.time)), h("td", {}, call.client ?? "–"), h("td.mono", {}, call.session ?? "–"),
      h("td", {}, call.server), h("td", {}, call.tool), h("td", {}, call.mode ?? "–"),
      h("td", {}, h(`span.badge.source-${call.source}`, {}, call.source ?? "–")),
      h("td.num", {}, fmtMs(call.latency_ms)), h("td", {}, call.outcome));
  }

  function draw() {
    const shown = calls.filter(matches);
    body.replaceChildren(...shown.map(row));
    counts.textContent = `${shown.length} shown of ${calls.length}` + (dropped ? ` · ${dropped} dropped (too slow)` : "");
  }

  // Many calls a second redraw the table at most once a frame.
  let pending = false;
  const schedule = () => {
    if (paused || pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  };

  const close = api.events("/calls/stream", {
    call(call) {
      calls.unshift(call);
      if (calls.length > MAX_ROWS) calls.length = MAX_ROWS;
      schedule();
    },
    dropped(data) { dropped = data.dropped; schedule(); },
  }, (s) => { state.textContent = s; state.dataset.state = s; });
  draw();
  return close;
}
