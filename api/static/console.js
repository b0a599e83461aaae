"use strict";
// The spdist console: polls /ui/api/overview, counts ETAs down between polls, and sends
// cancel/retry/release with the double-submit CSRF header. Text goes in with textContent
// only: Streampixel's messages and ids are never parsed as HTML.

const POLL_MS = 2000;
const TICK_MS = 250;
let clockSkewMs = 0; // server clock minus this browser's, so countdowns follow the server
let selected = null; // the request whose history is shown
let timelineUser = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "onclick") node.addEventListener("click", v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function short(id) { return id ? id.slice(0, 8) : ""; }
// A 24-hex id's end: ObjectIds made together differ there, not at their start.
function tail(id) { return id && id.length > 8 ? `…${id.slice(-7)}` : id || ""; }
function nowMs() { return Date.now() + clockSkewMs; }

function relative(iso) {
  if (!iso) return "";
  const s = Math.round((Date.parse(iso) - nowMs()) / 1000);
  const abs = Math.abs(s);
  const text = abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.floor(abs / 60)} min ${abs % 60} s`
    : `${Math.floor(abs / 3600)} h ${Math.floor((abs % 3600) / 60)} min`;
  if (s > 0) return `in ${text}`;
  return abs < 1 ? "now" : `${text} ago`;
}

// Countdowns: every [data-time] element shows its time relative to now, four times a second.
function when(iso) {
  return el("time", { "data-time": iso || "", dateTime: iso || "", title: iso || "" }, relative(iso));
}
function tick() {
  for (const t of document.querySelectorAll("[data-time]")) t.textContent = relative(t.dataset.time);
}

function csrf() {
  const m = document.cookie.match(/(?:^|; )spdist_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
  return body;
}

async function act(id, action) {
  const r = await fetch(`/ui/api/distributions/${encodeURIComponent(id)}/${action}`, {
    method: "POST", credentials: "same-origin", headers: { "X-Spdist-Csrf": csrf() },
  });
  const body = await r.json();
  showError(r.ok ? null : `${action} ${short(id)}: ${body.detail || r.status}`);
  selected = id;
  await refresh();
}

function button(label, id, action) {
  return el("button", { type: "button", class: `act ${action}`, "data-id": id,
    onclick: () => act(id, action) }, label);
}
function idLink(id) {
  return el("a", { href: `#${id}`, class: "id", title: id, onclick: (e) => {
    e.preventDefault(); selected = id; refresh();
  } }, short(id));
}

function showError(text) {
  const box = document.getElementById("error");
  box.hidden = !text;
  box.textContent = text || "";
}

function renderLanes(lanes) {
  const root = document.getElementById("lanes");
  root.replaceChildren();
  if (!lanes.length) root.append(el("p", { class: "muted empty" }, "No request is waiting."));
  for (const lane of lanes) {
    const rows = lane.items.map((i) => el("tr", { "data-id": i.id },
      el("td", {}, String(i.position)), el("td", {}, idLink(i.id)),
      el("td", { class: "hex" }, tail(i.projectId)), el("td", { class: "hex" }, tail(i.uploadId)),
      el("td", { class: `state ${i.state}` }, i.state),
      el("td", { class: "eta" }, when(i.estimatedDispatchAt)),
      el("td", {}, button("cancel", i.id, "cancel"))));
    const more = lane.waiting > lane.items.length ? `, first ${lane.items.length} shown` : "";
    root.append(el("div", { class: "lane", "data-user": lane.userId },
      el("h3", {}, "user ", el("code", {}, lane.userId), ` · ${lane.waiting} waiting${more} · next slot `,
        el("span", { class: "next-slot" }, when(lane.nextSlotAt))),
      el("table", {}, el("thead", {}, el("tr", {}, ...["#", "id", "project", "upload", "state",
        "estimated dispatch", ""].map((h) => el("th", {}, h)))), el("tbody", {}, ...rows))));
  }
}

function renderHeld(held) {
  document.getElementById("held-section").hidden = !held.length;
  document.querySelector("#held tbody").replaceChildren(...held.map((d) => el("tr", { "data-id": d.id },
    el("td", {}, idLink(d.id)), el("td", { class: "hex" }, tail(d.userId)),
    el("td", { class: "hex" }, tail(d.projectId)), el("td", { class: "hex" }, tail(d.uploadId)),
    el("td", {}, when(d.createdAt)), el("td", {}, button("release", d.id, "release")))));
}

function attemptRow(a) {
  return el("tr", {}, el("td", {}, when(a.startedAt)), el("td", {}, idLink(a.requestId)),
    el("td", { class: "hex" }, tail(a.userId)), el("td", {}, String(a.number)),
    el("td", { class: `outcome ${a.outcome || "in_flight"}` }, a.outcome || "in flight"),
    el("td", {}, a.httpStatus ? String(a.httpStatus) : ""), el("td", { class: "msg" }, a.message || ""));
}

function renderTimeline(t) {
  const root = document.getElementById("timeline");
  root.replaceChildren();
  if (!t) return;
  const start = Date.parse(t.since), span = nowMs() - start;
  const bar = el("div", { class: "timeline-bar" });
  for (const c of t.calls) {
    const left = Math.max(0, Math.min(100, ((Date.parse(c.startedAt) - start) / span) * 100));
    const mark = el("span", { class: `mark ${c.outcome || "in_flight"}`,
      title: `${c.startedAt} ${c.outcome || "in flight"} ${c.message || ""}` });
    mark.style.left = `${left}%`;
    bar.append(mark);
  }
  root.append(el("p", { class: "muted" }, `${t.calls.length} call(s) since `, when(t.since)), bar,
    el("table", {}, el("tbody", {}, ...t.calls.slice(-20).reverse().map(attemptRow))));
}

async function renderRequest() {
  const section = document.getElementById("request-section");
  section.hidden = !selected;
  if (!selected) return;
  document.getElementById("request-id").textContent = selected;
  const root = document.getElementById("request");
  let d;
  try { d = await getJson(`/ui/api/distributions/${encodeURIComponent(selected)}`); }
  catch (e) { root.replaceChildren(el("p", { class: "error" }, String(e.message))); return; }
  const facts = [["state", d.state], ["user", d.userId], ["project", d.projectId], ["upload", d.uploadId],
    ["priority", String(d.priority)], ["created", when(d.createdAt)], ["position", d.position ?? ""],
    ["estimated dispatch", d.estimatedDispatchAt ? when(d.estimatedDispatchAt) : ""],
    ["next attempt", d.nextAttemptAt ? when(d.nextAttemptAt) : ""], ["last message", d.message || ""]];
  const actions = [];
  if (["queued", "retrying", "held"].includes(d.state)) actions.push(button("cancel", d.id, "cancel"));
  if (["failed", "dead"].includes(d.state)) actions.push(button("retry", d.id, "retry"));
  if (d.state === "held") actions.push(button("release", d.id, "release"));
  root.replaceChildren(
    el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: `f-${k.replace(" ", "-")}` }, v)])),
    el("p", {}, ...actions),
    el("table", {}, el("thead", {}, el("tr", {}, ...["started", "request", "user", "#", "outcome", "HTTP",
      "Streampixel said"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...d.attempts.map((a) => attemptRow({ ...a, requestId: d.id, userId: d.userId })))));
}

async function refresh() {
  const q = new URLSearchParams();
  if (timelineUser) { q.set("user", timelineUser); q.set("hours", document.getElementById("hours").value); }
  try {
    const data = await getJson(`/ui/api/overview?${q}`);
    clockSkewMs = Date.parse(data.now) - Date.now();
    document.getElementById("interval").textContent = `${data.intervalS} s`;
    renderLanes(data.lanes);
    renderHeld(data.held);
    document.querySelector("#recent tbody").replaceChildren(...data.recent.map(attemptRow));
    renderTimeline(data.timeline);
    await renderRequest();
    document.getElementById("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById("status").textContent = `not updated: ${e.message}`;
  }
}

document.getElementById("user-form").addEventListener("submit", (e) => {
  e.preventDefault();
  timelineUser = document.getElementById("user").value.trim().toLowerCase() || null;
  refresh();
});
document.getElementById("hours").addEventListener("change", refresh);
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin", headers: { "X-Spdist-Csrf": csrf() } });
  location.reload();
});
if (location.hash.length > 1) selected = location.hash.slice(1);
refresh();
setInterval(refresh, POLL_MS);
setInterval(tick, TICK_MS);
