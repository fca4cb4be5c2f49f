// Fidelity: the `fidelity calls` and `fidelity trajectories` reports found under the page's directories,
// opened from their report.json (the full report.html beside it one click away), and call-fidelity runs
// for chosen tools started from here, with their progress.
import { h } from "../dom.js";
import { handOver, num, pct, query, useStyles } from "../data.js";

const POLL_MS = 300;
const CALL_METRICS = [["schema_validity", "schema validity"], ["outcome_agreement", "outcome agreement"],
  ["kappa", "Cohen's κ"], ["path_jaccard", "path Jaccard"], ["type_agreement", "type agreement"],
  ["value_fidelity", "value fidelity"], ["bleu4", "BLEU-4"], ["embedding_cosine", "embedding cosine"]];
const PAIR_METRICS = [["pairs", "pairs"], ["diverged", "diverged"], ["first_divergence", "mean first divergence"],
  ["normalized_edit_distance", "norm. edit distance"], ["f1_name", "tool-call F1 (name)"],
  ["f1_name_args", "tool-call F1 (name+args)"], ["answer_exact", "answer exact"], ["answer_f1", "answer token F1"],
  ["success_agreement", "success agreement"]];

const table = (id, columns, rows) => h("table.grid", { id },
  h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
  h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c, i) => h(i ? "td.num" : "td", {}, c))))));

function kappa(set) {
  return set.kappa === null && set.kappa_undefined ? "undefined" : num(set.kappa);
}

function callsReport(report) {
  const parts = [h("p.muted", {}, `${report.backend}${report.model ? ` (${report.model})` : ""} · k=${report.examples}`
    + ` · servers ${report.servers.join(", ")} · second live call: ${report.second_live ? "yes" : "no"}`
    + ` · embedding: ${report.embedding}`)];
  for (const [setting, data] of Object.entries(report.settings)) {
    const overall = data.overall;
    parts.push(h("h4", {}, `${setting.replace("_", "-")}: ${overall.calls} call(s), ${overall.simulator_failures} simulator failure(s)`));
    parts.push(table(`metrics-${setting}`, ["metric", "simulated vs live", "live vs live", "ratio"],
      CALL_METRICS.map(([name, label]) => [label,
        name === "kappa" ? kappa(overall.simulated) : num(overall.simulated[name]),
        overall.live_vs_live ? num(overall.live_vs_live[name]) : "–", overall.ratio ? num(overall.ratio[name]) : "–"])));
    parts.push(table(`per-tool-${setting}`, ["tool", "calls", "failures", "schema validity", "outcome agreement", "κ", "path Jaccard", "BLEU-4"],
      Object.entries(data.per_tool).map(([tool, agg]) => [tool, agg.calls, agg.simulator_failures,
        num(agg.simulated.schema_validity), num(agg.simulated.outcome_agreement), kappa(agg.simulated),
        num(agg.simulated.path_jaccard), num(agg.simulated.bleu4)])));
  }
  return parts;
}

function trajectoriesReport(report) {
  const parts = [h("p.muted", {}, `baseline ${report.baseline} · ${report.bootstrap_samples} bootstrap samples, seed ${report.seed}`)];
  parts.push(table("modes", ["mode", "trajectories", "tasks", "success rate", "mean tool calls"],
    Object.entries(report.modes).map(([mode, m]) => [mode, m.trajectories, m.tasks, pct(m.success_rate), num(m.mean_tool_calls, 2)])));
  for (const c of report.comparisons) {
    const gap = c.gap ? `${num(c.gap.gap)} [${num(c.gap.ci_low)}, ${num(c.gap.ci_high)}]` : "–";
    parts.push(h("h4", {}, `${c.mode} vs ${c.against}: success-rate gap ${gap}`));
    parts.push(table(`pairs-${c.mode}`, ["metric", `${c.mode} vs ${c.against}`, "live vs live"],
      PAIR_METRICS.map(([name, label]) => [label, num(c.pairs[name]), c.live_vs_live ? num(c.live_vs_live[name]) : "–"])));
    for (const note of c.degenerate || []) parts.push(h("p.muted", {}, note));
  }
  for (const [mode, text] of Object.entries(report.shown || {})) parts.push(h("p.muted", {}, `${mode}: ${text}`));
  return parts;
}

export async function render(root, api) {
  useStyles();
  const status = h("p.status", { role: "status", id: "fidelity-status" });
  const reportsBody = h("tbody");
  const detail = h("div.detail", { id: "report-detail" });
  const toolsBox = h("div.tools-choice", { id: "run-tools" });
  const setting = h("select", { id: "run-setting" }, ["both", "few_shot", "zero_shot"].map((s) => h("option", { value: s }, s)));
  const backend = h("select", { id: "run-backend" });
  const startButton = h("button", { type: "button", id: "run-start", onclick: start }, "Start run");
  const progress = h("progress", { id: "run-progress", max: 1, value: 0, hidden: true });
  const progressText = h("span", { id: "run-progress-text" });
  const runsBody = h("tbody");
  let timer = null;

  root.append(
    h("h2", {}, "Fidelity"),
    status,
    h("section.card", {}, h("h3", {}, "New call-fidelity run"),
      h("p.muted", {}, "Simulate the chosen tools' recorded calls and score them against the recordings, as ",
        h("code", {}, "simgate fidelity calls"), " does; the report goes to the state directory's reports."),
      toolsBox,
      h("div.toolbar", {}, h("label", {}, "setting ", setting), h("label", {}, "simulator ", backend), startButton, progress, progressText),
      h("table.grid", { id: "runs" }, h("thead", {}, h("tr", {}, ["run", "tools", "backend", "state", "calls", "report"].map((t) => h("th", {}, t)))), runsBody)),
    h("section.card", {}, h("h3", {}, "Reports"),
      h("table.grid", { id: "reports" }, h("thead", {}, h("tr", {}, ["kind", "created", "where", "summary", ""].map((t) => h("th", {}, t)))), reportsBody)),
    detail,
  );

  async function openReport(where) {
    try {
      const opened = await api.get(`/fidelity/report${query(where)}`);
      const report = opened.report;
      const links = [];
      if (opened.html) {
        links.push(h("a", { id: "report-html", href: `/ui/api/fidelity/report.html${query(where)}`, target: "_blank", rel: "noopener" }, "full report (HTML)"));
      }
      if (opened.kind === "trajectories") {
        const dir = where.path.includes("/") ? where.path.slice(0, where.path.lastIndexOf("/") + 1) : "";
        links.push(" · ", h("a", { href: "#/trajectories", id: "report-trajectories",
          onclick: (e) => { e.preventDefault(); handOver("trajectories", { root: where.root, path: `${dir}trajectories.jsonl` }); } }, "read its trajectories"));
      }
      detail.replaceChildren(h("section.card", { dataset: { kind: opened.kind, path: where.path } },
        h("h3", {}, `${opened.kind === "calls" ? "Call" : "Trajectory"} fidelity · ${report.created_at}`),
        h("p", {}, h("code", {}, where.path), " ", ...links),
        ...(opened.kind === "calls" ? callsReport(report) : trajectoriesReport(report))));
    } catch (error) {
      detail.replaceChildren(h("p.error", { role: "alert" }, `could not open the report: ${error.message}`));
    }
  }

  function summary(r) {
    if (r.kind === "calls") {
      return `${r.backend} · ${r.calls ?? "?"} call(s) · outcome agreement ${pct(r.outcome_agreement)} · ${r.servers.join(", ")}`;
    }
    return Object.entries(r.modes).map(([mode, m]) => `${mode}: ${m.trajectories} (${pct(m.success_rate)} success)`).join(" · ");
  }

  async function refreshReports() {
    const { reports } = await api.get("/fidelity/reports");
    reportsBody.replaceChildren(...reports.map((r) => h("tr", { dataset: { path: r.path, kind: r.kind } },
      h("td", {}, r.kind), h("td", {}, r.created_at || ""), h("td.mono", {}, r.path), h("td", {}, summary(r)),
      h("td", {}, h("button", { type: "button", onclick: () => openReport({ root: r.root, path: r.path }) }, "Open")))));
    if (!reports.length) reportsBody.append(h("tr", {}, h("td", { colspan: 5 }, h("span.muted", {}, "no report found"))));
  }

  function runRow(run) {
    const calls = run.total ? `${run.done} / ${run.total}` : `${run.done}`;
    return h("tr", { dataset: { run: run.id, state: run.state } },
      h("td.mono", {}, run.id), h("td", {}, run.tools.join(", ")), h("td", {}, run.backend),
      h("td", {}, h(`span.badge.state-${run.state === "done" ? "ready" : run.state === "running" ? "starting" : "failed"}`, {}, run.state),
        run.error ? h("span.error", {}, ` ${run.error}`) : ""),
      h("td.num", {}, calls),
      h("td", {}, run.report ? h("button", { type: "button", onclick: () => openReport(run.report) }, "Open") : ""));
  }

  async function refreshRuns() {
    const { runs } = await api.get("/fidelity/runs");
    runsBody.replaceChildren(...runs.map(runRow));
    return runs;
  }

  async function refreshTools() {
    const info = await api.get("/fidelity/tools");
    toolsBox.replaceChildren(...info.tools.map((t) => h("label", {},
      h("input", { type: "checkbox", value: `${t.server}/${t.tool}`, dataset: { tool: `${t.server}/${t.tool}` } }),
      ` ${t.server}/${t.tool} `, h("span.muted", {}, `(${t.recordings})`))));
    if (!info.tools.length) toolsBox.append(h("span.muted", {}, "nothing recorded yet"));
    const backends = [...new Set([info.default_backend, "examples", "schema", "examples-schema"])];
    backend.replaceChildren(...backends.map((b) => h("option", { value: b === info.default_backend ? "" : b },
      b === info.default_backend && info.simulator ? `${b} (the gateway's: ${info.simulator})` : b)));
    return info;
  }

  function follow(id) {
    clearInterval(timer);
    progress.hidden = false;
    startButton.disabled = true;
    timer = setInterval(async () => {
      try {
        const run = await api.get(`/fidelity/runs/${encodeURIComponent(id)}`);
        progress.max = run.total || 1;
        progress.value = run.done;
        progressText.textContent = `${run.done} / ${run.total ?? "?"} calls scored · ${run.state}`;
        progressText.dataset.state = run.state;
        runsBody.querySelector(`tr[data-run="${run.id}"]`)?.replaceWith(runRow(run));
        if (run.state !== "running") {
          clearInterval(timer);
          timer = null;
          startButton.disabled = false;
          status.textContent = run.state === "done" ? `run ${run.id} done` : `run ${run.id} ${run.state}: ${run.error}`;
          await Promise.all([refreshRuns(), refreshReports()]);
          if (run.report) await openReport(run.report);
        }
      } catch (error) {
        status.textContent = `could not follow the run: ${error.message}`;
      }
    }, POLL_MS);
  }

  async function start() {
    const tools = [...toolsBox.querySelectorAll("input:checked")].map((box) => box.value);
    if (!tools.length) { status.textContent = "choose at least one tool"; return; }
    try {
      const run = await api.post("/fidelity/runs", { tools, setting: setting.value, backend: backend.value || null });
      status.textContent = `run ${run.id} started`;
      await refreshRuns();
      follow(run.id);
    } catch (error) {
      status.textContent = `could not start the run: ${error.message}`;
    }
  }

  try {
    const [info] = await Promise.all([refreshTools(), refreshReports()]);
    await refreshRuns();
    if (info.running) follow(info.running);
  } catch (error) {
    status.textContent = `could not load: ${error.message}`;
  }
  return () => clearInterval(timer);
}
