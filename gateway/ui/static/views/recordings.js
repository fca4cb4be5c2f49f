// Recordings: browse and search the store (server, tool, arguments), see one key's recordings exactly as
// `simgate cache show` prints them, delete or export a selection as a cassette.
import { h } from "../dom.js";
import { download, query, useStyles } from "../data.js";

const PAGE = 50;

export async function render(root, api) {
  useStyles();
  const filters = { server: "", tool: "", q: "" };
  let offset = 0;
  let tools = [];
  const selected = new Set();
  let confirming = false;

  const status = h("p.status", { role: "status", id: "recordings-status" });
  const serverChoice = h("select", { id: "rec-server", onchange: (e) => { filters.server = e.target.value; filters.tool = ""; offset = 0; refresh(); } });
  const toolChoice = h("select", { id: "rec-tool", onchange: (e) => { filters.tool = e.target.value; offset = 0; refresh(); } });
  const search = h("input", { type: "search", id: "rec-search", placeholder: "arguments or key…",
    onkeydown: (e) => { if (e.key === "Enter") { filters.q = e.target.value.trim(); offset = 0; refresh(); } } });
  const counts = h("span.muted", { id: "rec-counts" });
  const exportButton = h("button", { type: "button", id: "rec-export", disabled: true, onclick: exportSelection }, "Export selected");
  const deleteButton = h("button", { type: "button", id: "rec-delete", disabled: true, onclick: deleteSelection }, "Delete selected");
  const all = h("input", { type: "checkbox", id: "rec-all", title: "select every key shown",
    onchange: (e) => { for (const box of body.querySelectorAll("input[data-key]")) { box.checked = e.target.checked; mark(box.dataset.key, box.checked); } } });
  const body = h("tbody");
  const pager = h("div.pager");
  const detail = h("div.detail", { id: "recording-detail" }, h("p.muted", {}, "Click a key to see its recordings."));

  root.append(
    h("h2", {}, "Recordings"),
    h("div.toolbar", {}, serverChoice, toolChoice, search,
      h("button", { type: "button", id: "rec-search-go", onclick: () => { filters.q = search.value.trim(); offset = 0; refresh(); } }, "Search"),
      exportButton, deleteButton, counts),
    status,
    h("table.grid", { id: "recordings" },
      h("thead", {}, h("tr", {}, h("th", {}, all), ...["server", "tool", "key", "recordings", "errors", "recorded at", "arguments"].map((t) => h("th", {}, t)))),
      body),
    pager,
    detail,
  );

  function mark(key, on) {
    if (on) selected.add(key); else selected.delete(key);
    confirming = false;
    deleteButton.textContent = "Delete selected";
    deleteButton.classList.remove("confirm");
    exportButton.disabled = deleteButton.disabled = selected.size === 0;
    exportButton.textContent = selected.size ? `Export ${selected.size} selected` : "Export selected";
  }

  function options() {
    const servers = [...new Set(tools.map((t) => t.server))].sort();
    serverChoice.replaceChildren(h("option", { value: "" }, "any server"),
      ...servers.map((s) => h("option", { value: s, selected: s === filters.server }, s)));
    const shown = tools.filter((t) => !filters.server || t.server === filters.server).map((t) => t.tool);
    toolChoice.replaceChildren(h("option", { value: "" }, "any tool"),
      ...[...new Set(shown)].sort().map((t) => h("option", { value: t, selected: t === filters.tool }, t)));
  }

  async function open(key) {
    for (const tr of body.querySelectorAll("tr.open")) tr.classList.remove("open");
    body.querySelector(`tr[data-key="${key}"]`)?.classList.add("open");
    try {
      const shown = await api.get(`/recordings/${encodeURIComponent(key)}`);
      const first = shown.recordings[0] || {};
      detail.replaceChildren(
        h("h3", {}, `${first.server} / ${first.tool}`),
        h("p.muted", {}, `key ${shown.key} · ${shown.recordings.length} recording(s) · the same as `,
          h("code", {}, `simgate cache show ${shown.key.slice(0, 12)}`)),
        h("pre.json", { id: "recording-json", dataset: { key: shown.key } }, JSON.stringify(shown, null, 2)),
      );
    } catch (error) {
      detail.replaceChildren(h("p.error", { role: "alert" }, error.message));
    }
  }

  function row(item) {
    const box = h("input", { type: "checkbox", dataset: { key: item.key }, checked: selected.has(item.key),
      onclick: (e) => e.stopPropagation(), onchange: (e) => mark(item.key, e.target.checked) });
    const args = JSON.stringify(item.arguments);
    return h("tr.clickable", { dataset: { key: item.key }, onclick: () => open(item.key) },
      h("td", {}, box), h("td", {}, item.server), h("td", {}, item.tool), h("td.mono", { title: item.key }, item.key.slice(0, 12)),
      h("td.num", {}, item.recordings), h("td.num", {}, item.errors || ""), h("td", {}, item.recorded_at),
      h("td.args.mono", { title: args }, args));
  }

  async function refresh() {
    try {
      const page = await api.get(`/recordings${query({ ...filters, offset, limit: PAGE })}`);
      tools = page.tools;
      options();
      all.checked = false;
      body.replaceChildren(...page.rows.map(row));
      counts.textContent = `${page.total} key(s)` + (page.total > PAGE ? ` · ${offset + 1}–${Math.min(offset + PAGE, page.total)}` : "");
      pager.replaceChildren(
        h("button", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); refresh(); } }, "‹ Previous"),
        h("button", { type: "button", disabled: offset + PAGE >= page.total, onclick: () => { offset += PAGE; refresh(); } }, "Next ›"));
    } catch (error) {
      status.textContent = `could not load recordings: ${error.message}`;
    }
  }

  async function exportSelection() {
    try {
      const saved = await download("/recordings/export", { keys: [...selected] }, "simgate-cassette.jsonl");
      status.textContent = `exported ${saved.count} recording(s) of ${selected.size} key(s) to ${saved.name}`;
    } catch (error) {
      status.textContent = `export failed: ${error.message}`;
    }
  }

  async function deleteSelection() {
    if (!confirming) { // a second click deletes: no dialog to miss
      confirming = true;
      deleteButton.textContent = `Really delete ${selected.size} key(s)?`;
      deleteButton.classList.add("confirm");
      return;
    }
    try {
      const done = await api.post("/recordings/delete", { keys: [...selected] });
      status.textContent = `deleted ${done.deleted.length} key(s)` + (done.missing.length ? `; ${done.missing.length} were already gone` : "");
      selected.clear();
      mark("", false);
      detail.replaceChildren(h("p.muted", {}, "Click a key to see its recordings."));
    } catch (error) {
      status.textContent = `delete failed: ${error.message}`;
    }
    await refresh();
  }

  await refresh();
}
