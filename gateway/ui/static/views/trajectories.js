// Trajectories: open a run's JSONL, read one trajectory as a conversation (each tool call with where its
// answer came from), or two runs of one task side by side with the step where their tool calls first part.
import { fmtMs, h } from "../dom.js";
import { query, takeHandOver, useStyles } from "../data.js";

function badge(source) {
  return h(`span.badge.source-${source ?? "none"}`, { dataset: { source: source ?? "" } }, source ?? "no provenance");
}

function callLine(call) {
  if (!call) return "";
  return h("div.muted", {}, badge(call.source), ` ${fmtMs(call.latency_ms)}`,
    call.is_error ? h("span.error", {}, " · error") : "",
    call.cache_key ? h("span.mono", { title: call.cache_key }, ` · key ${call.cache_key.slice(0, 12)}`) : "");
}

// One trajectory as turns; `mark` = {turn, note} puts the divergence marker on that turn.
function conversation(view, mark) {
  const calls = view.calls;
  const turns = view.turns.map((turn) => {
    const parts = [h("span.role", {}, turn.role)];
    if (turn.role === "tool") {
      const call = turn.call === null || turn.call === undefined ? null : calls[turn.call];
      parts.push(h("span.muted", {}, call ? `answer to call ${turn.call + 1} (${call.name})` : "answer"), callLine(call));
    }
    if (turn.content) parts.push(h("pre", {}, turn.content));
    for (const asked of turn.tool_calls || []) {
      const call = asked.call === null || asked.call === undefined ? null : calls[asked.call];
      parts.push(h("div.call", { dataset: { call: asked.call ?? "" } },
        h("strong", {}, `call ${asked.call === null ? "?" : asked.call + 1}: `), h("code", {}, asked.name),
        h("pre", {}, asked.arguments ?? ""), callLine(call)));
    }
    const marked = mark && mark.turn === turn.index;
    if (marked) parts.unshift(h("div.divergence-note", {}, mark.note));
    return h(`div.turn.role-${turn.role}${marked ? ".diverge" : ""}`, { dataset: { turn: turn.index, role: turn.role } }, parts);
  });
  const answer = view.final_answer === null || view.final_answer === undefined ? "" : ` · answer: ${view.final_answer}`;
  return h("div", { dataset: { mode: view.mode } },
    h("h3", {}, `${view.id} · ${view.mode} · repeat ${view.repeat}`),
    h("p.muted", {}, `${view.outcome}${answer} · ${calls.length} tool call(s) · session ${view.session ?? "–"}`),
    h("div.conversation", {}, turns));
}

export async function render(root, api) {
  useStyles();
  const status = h("p.status", { role: "status", id: "trajectories-status" });
  const fileChoice = h("select", { id: "traj-file", onchange: () => openFile() });
  const listBody = h("tbody");
  const tasks = h("div", { id: "traj-tasks" });
  const compareButton = h("button", { type: "button", id: "traj-compare", disabled: true, onclick: () => compareChosen() }, "Compare the two selected");
  const detail = h("div.detail", { id: "trajectory-detail" });
  let file = null;
  const chosen = [];

  root.append(
    h("h2", {}, "Trajectories"),
    h("div.toolbar", {}, h("label", {}, "file ", fileChoice), compareButton),
    status,
    tasks,
    h("table.grid", { id: "trajectories" }, h("thead", {}, h("tr", {},
      ["", "#", "task", "mode", "repeat", "tool calls", "outcome", "question"].map((t) => h("th", {}, t)))), listBody),
    detail,
  );

  // Chosen runs, kept across files: two runs of one task may sit in two files (e.g. two `simgate run`s).
  const same = (a, b) => a.root === b.root && a.path === b.path && a.index === b.index;

  function choose(index, on) {
    const entry = { ...file, index };
    const at = chosen.findIndex((c) => same(c, entry));
    if (on && at < 0) chosen.push(entry);
    if (!on && at >= 0) chosen.splice(at, 1);
    while (chosen.length > 2) {
      const dropped = chosen.shift();
      if (dropped.root === file.root && dropped.path === file.path) {
        const box = listBody.querySelector(`input[data-index="${dropped.index}"]`);
        if (box) box.checked = false;
      }
    }
    compareButton.disabled = chosen.length !== 2;
    compareButton.textContent = chosen.length === 2 && (chosen[0].path !== chosen[1].path || chosen[0].root !== chosen[1].root)
      ? "Compare the two selected (two files)" : "Compare the two selected";
  }

  async function openOne(index) {
    for (const tr of listBody.querySelectorAll("tr.open")) tr.classList.remove("open");
    listBody.querySelector(`tr[data-index="${index}"]`)?.classList.add("open");
    try {
      const view = await api.get(`/trajectories/one${query({ ...file, index })}`);
      detail.replaceChildren(h("section", { id: "conversation", dataset: { index } }, conversation(view, null)));
    } catch (error) {
      detail.replaceChildren(h("p.error", { role: "alert" }, error.message));
    }
  }

  // `left`, `right`: {root, path, index}.
  async function compare(left, right) {
    try {
      const both = await api.get(`/trajectories/compare${query({ root: left.root, path: left.path, left: left.index,
        right_root: right.root, right_path: right.path, right: right.index })}`);
      const d = both.divergence;
      const note = d ? `first divergence: step ${d.step + 1} (tool call ${d.step + 1}), ${d.reason}` : "";
      const banner = d
        ? h("p.banner.diverges", { id: "divergence", dataset: { step: d.step } }, `The tool calls first part at step ${d.step + 1}: ${d.reason}.`)
        : h("p.banner", { id: "divergence", dataset: { step: "" } }, `Same tool calls (${both.calls.left}) on both sides.`);
      detail.replaceChildren(h("section", { id: "side-by-side" },
        both.same_task ? "" : h("p.error", {}, "These are runs of different tasks."),
        banner,
        h("div.split", {},
          h("div", { id: "left" }, conversation(both.left, d && { turn: d.left.turn, note })),
          h("div", { id: "right" }, conversation(both.right, d && { turn: d.right.turn, note })))));
      detail.querySelector(".turn.diverge")?.scrollIntoView({ block: "center" });
    } catch (error) {
      detail.replaceChildren(h("p.error", { role: "alert" }, error.message));
    }
  }

  function compareChosen() {
    compare(chosen[0], chosen[1]); // in the order they were chosen: the first on the left
  }

  async function openFile() {
    const [root_, ...rest] = fileChoice.value.split(":");
    file = { root: Number(root_), path: rest.join(":") };
    detail.replaceChildren();
    try {
      const listed = await api.get(`/trajectories/list${query(file)}`);
      listBody.replaceChildren(...listed.trajectories.map((t) => h("tr.clickable", { dataset: { index: t.index, mode: t.mode ?? "" }, onclick: () => openOne(t.index) },
        h("td", {}, h("input", { type: "checkbox", dataset: { index: t.index }, checked: chosen.some((c) => same(c, { ...file, index: t.index })),
          onclick: (e) => e.stopPropagation(),
          onchange: (e) => choose(t.index, e.target.checked) })),
        h("td.num", {}, t.index), h("td", {}, t.id), h("td", {}, t.mode), h("td.num", {}, t.repeat),
        h("td.num", {}, t.tool_calls), h("td", {}, t.outcome), h("td", {}, t.question ?? ""))));
      tasks.replaceChildren(...(listed.tasks.length ? [h("h3", {}, "Tasks run in several modes")] : []),
        ...listed.tasks.map((task) => {
          const modes = Object.keys(task.modes);
          const left = modes.includes("live") ? "live" : modes[0];
          const right = modes.find((m) => m !== left);
          return h("div.toolbar", { dataset: { task: task.task } }, h("code", {}, task.task),
            h("button", { type: "button", dataset: { compare: task.task },
              onclick: () => compare({ ...file, index: task.modes[left] }, { ...file, index: task.modes[right] }) },
              `${left} vs ${right} side by side`));
        }));
      const problems = listed.problems.length ? ` · ${listed.problems.length} line(s) unreadable (first: line ${listed.problems[0].line}: ${listed.problems[0].error})` : "";
      status.textContent = `${listed.trajectories.length} trajectories${listed.truncated ? " (first ones only)" : ""}${problems}`;
    } catch (error) {
      status.textContent = `could not open ${file.path}: ${error.message}`;
    }
  }

  try {
    const { files, roots } = await api.get("/trajectories/files");
    const wanted = takeHandOver("trajectories");
    fileChoice.replaceChildren(...files.map((f) => h("option", {
      value: `${f.root}:${f.path}`, selected: wanted && wanted.root === f.root && wanted.path === f.path,
    }, `${roots[f.root].directory}/${f.path}`)));
    if (files.length) await openFile();
    else status.textContent = `no trajectory file under ${roots.map((r) => r.directory).join(", ")}`;
  } catch (error) {
    status.textContent = `could not list trajectory files: ${error.message}`;
  }
}
