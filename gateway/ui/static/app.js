// The shell: navigation from /ui/api/views, one ES module per view (views/NAME.js exporting render(root, api)).
import { api } from "./api.js";
import { h } from "./dom.js";

const nav = document.getElementById("nav");
const main = document.getElementById("view");
let leave = null;
let views = [];

async function show() {
  const name = location.hash.replace(/^#\/?/, "") || views[0]?.name;
  const view = views.find((v) => v.name === name) || views[0];
  if (typeof leave === "function") leave();
  leave = null;
  for (const link of nav.querySelectorAll("a")) link.classList.toggle("active", link.dataset.view === view.name);
  const root = h("section.view", { id: `view-${view.name}`, dataset: { view: view.name } });
  main.replaceChildren(root);
  try {
    const module = await import(`./views/${view.name}.js`);
    leave = await module.render(root, api);
  } catch (error) {
    root.append(h("p.error", { role: "alert" }, `${view.title}: ${error.message}`));
  }
}

async function start() {
  views = (await api.get("/views")).views;
  nav.replaceChildren(...views.map((v) => h("a", { href: `#/${v.name}`, dataset: { view: v.name } }, v.title)));
  const session = await api.get("/session");
  if (session.key) {
    document.getElementById("who").textContent = `key: ${session.key}`;
    const logout = document.getElementById("logout");
    logout.hidden = false;
    logout.addEventListener("click", async () => {
      await fetch("/ui/logout", { method: "POST", headers: { "X-Simgate-UI": "1" } });
      location.href = "/ui/login";
    });
  }
  window.addEventListener("hashchange", show);
  await show();
}

start();
