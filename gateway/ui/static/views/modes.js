// Modes at every level (gateway, server, tool, session), changed through the admin API: PUT /modes sets one,
// DELETE /modes?server=&tool=&session= drops a run-time setting (that level follows the config again).
import { h, select } from "../dom.js";

const INHERIT = "(inherit)";

export async function render(root, api) {
  const status = h("p.status", { role: "status" });
  const content = h("div");
  root.append(h("h2", {}, "Modes"), h("p.muted", {},
    "Most specific first: the request (X-Simgate-Mode), the session, the tool, the server, the gateway default."),
  status, content);
  const { modes: MODES } = await api.get("/session");

  async function change(where, mode, what) {
    try {
      if (mode === INHERIT) await api.del(`/modes?${new URLSearchParams(where)}`);
      else await api.put("/modes", { mode, ...where });
      status.textContent = `${what}: ${mode}`;
    } catch (error) {
      status.textContent = `${what}: ${error.message}`;
    }
    await refresh();
  }

  // A level's control: its own setting, or (inherit) showing what applies from the level above.
  function control(where, own, inherited, what, level) {
    return [
      h("td", {}, select([INHERIT, ...MODES], own || INHERIT, (mode) => change(where, mode, what),
        { dataset: { level, ...where } })),
      h("td.muted", { dataset: { effective: own || inherited } }, own ? "" : `→ ${inherited}`),
    ];
  }

  async function refresh() {
    const [modes, { servers }] = await Promise.all([api.get("/modes"), api.get("/servers")]);
    const details = await Promise.all(servers.map((s) => api.get(`/servers/${encodeURIComponent(s.name)}`)));
    const gateway = h("section.card", { id: "modes-gateway" }, h("h3", {}, "Gateway default"),
      select(MODES, modes.default, (mode) => change({}, mode, "gateway default"), { dataset: { level: "gateway" } }),
      " ", h("button", { type: "button", onclick: () => change({}, INHERIT, "gateway default") }, "Reset to the config's"));
    const rows = details.flatMap((server) => {
      const own = modes.servers[server.name];
      const serverMode = own || modes.default;
      const tools = modes.tools[server.name] || {};
      return [
        h("tr.server", { dataset: { server: server.name } }, h("th", {}, server.name),
          control({ server: server.name }, own, `${modes.default} (gateway)`, server.name, "server")),
        ...server.tool_list.map((tool) => h("tr.tool", { dataset: { server: server.name, tool: tool.name } },
          h("td", {}, h("code", {}, tool.name)),
          control({ server: server.name, tool: tool.name }, tools[tool.name], `${serverMode} (server)`,
            `${server.name}/${tool.name}`, "tool"))),
      ];
    });
    const sessionInput = h("input", { type: "text", placeholder: "session id", id: "session-id" });
    const sessionMode = select(MODES, MODES[0], () => {}, { id: "session-mode" });
    const sessions = h("section.card", { id: "modes-sessions" }, h("h3", {}, "Sessions"),
      h("table.grid", {}, h("tbody", {}, Object.entries(modes.sessions).map(([session, mode]) =>
        h("tr", { dataset: { session } }, h("td.mono", {}, session),
          control({ session }, mode, "", `session ${session}`, "session"))))),
      h("form.inline", { onsubmit: (e) => {
        e.preventDefault();
        const session = sessionInput.value.trim();
        if (session) change({ session }, sessionMode.value, `session ${session}`);
      } }, sessionInput, sessionMode, h("button", { type: "submit" }, "Set")));
    content.replaceChildren(gateway,
      h("section.card", { id: "modes-servers" }, h("h3", {}, "Servers and tools"),
        h("table.grid", {}, h("tbody", {}, rows))),
      sessions);
  }

  await refresh();
}
