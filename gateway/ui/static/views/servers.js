// Servers: state, transport, sandbox, tools (with schemas), restarts, last error, upstream latency; start/stop/restart.
import { fmtMs, h, json } from "../dom.js";

const REFRESH_MS = 2000;

export async function render(root, api) {
  const status = h("p.status", { role: "status" });
  const body = h("tbody");
  const detail = h("div.detail", { id: "server-detail" });
  let open = null; // the server whose tools are shown

  root.append(
    h("h2", {}, "Servers"),
    status,
    h("table.grid", { id: "servers" },
      h("thead", {}, h("tr", {}, ["server", "state", "transport", "sandbox", "tools", "restarts",
        "p50", "p95", "p99", "last error", ""].map((t) => h("th", {}, t)))),
      body),
    detail,
  );

  async function act(name, action) {
    try {
      await api.post(`/servers/${encodeURIComponent(name)}/${action}`);
      status.textContent = `${name}: ${action} requested`;
    } catch (error) {
      status.textContent = `${name}: ${action} failed: ${error.message}`;
    }
    await refresh();
  }

  async function showTools(name) {
    open = name;
    const server = await api.get(`/servers/${encodeURIComponent(name)}`);
    detail.replaceChildren(
      h("h3", {}, `${name}: ${server.tool_list.length} tool(s)`),
      server.server_info ? h("p.muted", {}, `${server.server_info.name} ${server.server_info.version || ""}`
        + (server.protocol_version ? ` · protocol ${server.protocol_version}` : "")) : "",
      ...server.tool_list.map((tool) => h("details.tool", { dataset: { tool: tool.name } },
        h("summary", {}, h("code", {}, tool.name), " ", h("span.muted", {}, tool.description || "")),
        h("h4", {}, "input schema"), json(tool.inputSchema || {}),
        tool.outputSchema ? [h("h4", {}, "output schema"), json(tool.outputSchema)] : "",
        tool.annotations ? [h("h4", {}, "annotations"), json(tool.annotations)] : "")),
    );
  }

  function row(server) {
    const lat = server.latency_ms || {};
    const name = server.name;
    return h("tr", { dataset: { server: name, state: server.state } },
      h("td", {}, h("a", { href: "#/servers", onclick: (e) => { e.preventDefault(); showTools(name); } }, name)),
      h("td", {}, h(`span.badge.state-${server.state}`, {}, server.state)),
      h("td", {}, server.transport),
      h("td", {}, server.sandbox),
      h("td.num", {}, server.tools),
      h("td.num", {}, server.restarts),
      h("td.num", { title: `${lat.count || 0} calls` }, fmtMs(lat.p50)),
      h("td.num", {}, fmtMs(lat.p95)),
      h("td.num", {}, fmtMs(lat.p99)),
      h("td.error", {}, server.last_error || ""),
      h("td.actions", {},
        h("button", { type: "button", dataset: { action: "start" }, disabled: server.state !== "stopped",
          onclick: () => act(name, "start") }, "Start"),
        h("button", { type: "button", dataset: { action: "stop" }, disabled: server.state === "stopped",
          onclick: () => act(name, "stop") }, "Stop"),
        h("button", { type: "button", dataset: { action: "restart" }, onclick: () => act(name, "restart") },
          "Restart")),
    );
  }

  async function refresh() {
    try {
      const { servers } = await api.get("/servers");
      body.replaceChildren(...servers.map(row));
      if (open === null && servers.length) await showTools(servers[0].name);
    } catch (error) {
      status.textContent = `could not load servers: ${error.message}`;
    }
  }

  await refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
