// Modes at every level (gateway, server, tool, session), changed through the admin API (PUT /modes).
import { h, select } from "../dom.js";

export async function render(root, api) {
  const status = h("p.status", { role: "status" });
  const content = h("div");
  root.append(h("h2", {}, "Modes"), h("p.muted", {},
    "Most specific first: request, session, tool, server, gateway default."), status, content);
  const { modes: MODES } = await api.get("/session");

  async function change(body, what) {
    try {
      await api.put("/modes", body);
      status.textContent = `${what}: ${body.mode}`;
    } catch (error) {
      status.textContent = `${what}: ${error.message}`;
    }
    await refresh();
  }

  async function refresh() {
    const [modes, { servers }] = await Promise.all([api.get("/modes"), api.get("/servers")]);
    const inherit = "(inherit)";
    const gateway = h("section.card", { id: "modes-gateway" }, h("h3", {}, "Gateway default"),
      select(MODES, modes.default, (mode) => change({ mode }, "gateway default"), { dataset: { level: "gateway" } }));
    const serverRows = await Promise.all(servers.map(async (server) => {
      const detail = await api.get(`/servers/${encodeURIComponent(server.name)}`);
      const own = modes.servers[server.name];
      const tools = modes.tools[server.name] || {};
      return [
        h("tr", { dataset: { server: server.name } },
          h("th", {}, server.name),
          h("td", {}, own ? "" : h("span.muted", {}, `${modes.default} (default)`)),
          h("td", {}, select(own ? MODES : [inherit, ...MODES], own || inherit, (mode) => mode !== inherit
            && change({ mode, server: server.name }, server.name), { dataset: { level: "server", server: server.name } }))),
        ...detail.tool_list.map((tool) => h("tr.tool", { dataset: { server: server.name, tool: tool.name } },
          h("td", {}, h("code", {}, tool.name)),
          h("td", {}, tools[tool.name] ? "" : h("span.muted", {}, "(server's)")),
          h("td", {}, select(tools[tool.name] ? MODES : [inherit, ...MODES], tools[tool.name] || inherit,
            (mode) => mode !== inherit && change({ mode, server: server.name, tool: tool.name }, `${server.name}/${tool.name}`),
            { dataset: { level: "tool", server: server.name, tool: tool.name } })))),
      ];
    }));
    const sessionInput = h("input", { type: "text", placeholder: "session id", id: "session-id" });
    const sessionMode = select(MODES, MODES[0], () => {}, { id: "session-mode" });
    const sessions = h("section.card", { id: "modes-sessions" }, h("h3", {}, "Sessions"),
      h("table.grid", {}, h("tbody", {}, Object.entries(modes.sessions).map(([session, mode]) =>
        h("tr", { dataset: { session } }, h("td.mono", {}, session),
          h("td", {}, select(MODES, mode, (m) => change({ mode: m, session }, `session ${session}`))))))),
      h("form.inline", { onsubmit: (e) => {
        e.preventDefault();
        if (sessionInput.value.trim()) change({ mode: sessionMode.value, session: sessionInput.value.trim() }, `session ${sessionInput.value.trim()}`);
      } }, sessionInput, sessionMode, h("button", { type: "submit" }, "Set")));
    content.replaceChildren(gateway,
      h("section.card", { id: "modes-servers" }, h("h3", {}, "Servers and tools"),
        h("table.grid", {}, h("tbody", {}, serverRows.flat()))),
      sessions);
  }

  await refresh();
}
