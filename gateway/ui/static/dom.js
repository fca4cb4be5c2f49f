// h("tag.class", {attr: value, onclick: fn}, ...children): a tiny element builder (text is never parsed as HTML).
export function h(spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function json(value) {
  return h("pre.json", {}, JSON.stringify(value, null, 2));
}

export function fmtMs(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(value < 10 ? 2 : 1)} ms`;
}

export function fmtTime(seconds) {
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function select(options, current, onchange, props = {}) {
  const el = h("select", { ...props, onchange: (e) => onchange(e.target.value) },
    options.map((o) => h("option", { value: o, selected: o === current }, o)));
  return el;
}
