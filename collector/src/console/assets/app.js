// Groundtrail console: plain JavaScript, no framework, nothing loaded from elsewhere.
// State lives in the URL-less page: the session is an HttpOnly cookie the script never sees;
// the CSRF token comes from /console/api/session and goes back on sign-out.
"use strict";

const API = "/console/api/";
const COLORS = ["#2454c7", "#f79009", "#12b76a", "#d92d20", "#7a5af8", "#0ba5ec", "#98a2b3"];
const FILTERS = ["eventName", "eventSource", "username", "sourceIp", "errorCode", "resourceName",
  "resourceType", "accessKeyId", "account", "region", "readOnly", "category"];

const state = { csrf: null, tokens: [], page: 0, query: "", view: "events" };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function fmtTime(secs) {
  if (secs === null || secs === undefined) return "";
  return new Date(secs * 1000).toISOString().replace(".000Z", "Z");
}

function fmtSpan(secs) {
  if (secs === null || secs === undefined) return "";
  if (secs < 90) return secs + " s";
  if (secs < 5400) return Math.round(secs / 60) + " min";
  if (secs < 172800) return Math.round(secs / 3600) + " h";
  return Math.round(secs / 86400) + " d";
}

async function api(path, opts) {
  const r = await fetch(API + path, Object.assign({ credentials: "same-origin" }, opts || {}));
  if (r.status === 401) { showSignIn(); throw new Error("not signed in"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.message || ("HTTP " + r.status));
  return body;
}

function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }

function show(view) {
  state.view = view;
  for (const v of ["signin", "events", "overview", "health"]) $(v + "-view").hidden = v !== view;
  $("filters-bar").hidden = !(view === "events" || view === "overview");
  $("nav").hidden = view === "signin";
  $("signout").hidden = view === "signin" || !state.csrf;
  for (const v of ["events", "overview", "health"]) $("nav-" + v).classList.toggle("active", v === view);
}

function showSignIn() {
  state.csrf = null;
  $("whoami").textContent = "";
  show("signin");
  $("key-id").focus();
}

// ---- session ---------------------------------------------------------------------------

async function start() {
  try {
    const r = await fetch(API + "session", { credentials: "same-origin" });
    if (r.status !== 200) return showSignIn();
    signedIn(await r.json());
  } catch (e) { showSignIn(); }
}

function signedIn(s) {
  state.csrf = s.csrf || null;
  $("whoami").textContent = s.anonymous ? "loopback (unsigned reads)" : s.accessKeyId;
  route();
}

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  const r = await fetch(API + "signin", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ accessKeyId: $("key-id").value.trim(), secretAccessKey: $("secret").value }),
  });
  const body = await r.json().catch(() => ({}));
  $("secret").value = "";
  if (!r.ok) { $("signin-error").textContent = body.message || "sign-in failed"; return; }
  signedIn(body);
});

$("signout").addEventListener("click", async () => {
  await fetch(API + "signout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": state.csrf || "" } });
  showSignIn();
});

// ---- filters ---------------------------------------------------------------------------

function toEpoch(v) { return v ? Math.floor(new Date(v + (v.length <= 19 ? "Z" : "")).getTime() / 1000) : null; }

function filterQuery() {
  const p = new URLSearchParams();
  const s = toEpoch($("f-start").value), e = toEpoch($("f-end").value);
  if (s !== null && !isNaN(s)) p.set("start", s);
  if (e !== null && !isNaN(e)) p.set("end", e);
  for (const f of FILTERS) { const v = $("f-" + f).value.trim(); if (v) p.set(f, v); }
  return p;
}

$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
$("f-clear").addEventListener("click", () => {
  for (const f of FILTERS.concat(["start", "end"])) { const i = $("f-" + f); i.value = i.tagName === "SELECT" ? i.options[0].value : ""; }
  refresh();
});

function refresh() {
  if (state.view === "overview") return loadOverview();
  state.tokens = [null]; state.page = 0; loadEvents();
}

// ---- event history ---------------------------------------------------------------------

function eventRow(e) {
  const res = (e.resources || []).map((r) => [r.type, r.name].filter(Boolean).join(" ")).join("; ");
  const tr = el("tr", { "data-id": e.eventId },
    el("td", { text: fmtTime(e.eventTime) }), el("td", { text: e.eventName || "" }),
    el("td", { text: e.eventSource || "" }), el("td", { text: e.username || "" }),
    el("td", { text: e.sourceIp || "" }), el("td", { class: "err", text: e.errorCode || "" }),
    el("td", { text: e.region || "" }), el("td", { text: e.account || "" }), el("td", { text: res }));
  tr.addEventListener("click", () => openEvent(e.eventId, tr));
  return tr;
}

async function loadEvents() {
  showError(null);
  const p = filterQuery();
  p.set("limit", $("f-limit").value);
  const exp = p.toString();
  $("export-csv").href = API + "export.csv?" + exp.replace(/(^|&)limit=\d+/, "");
  $("export-json").href = API + "export.json?" + exp.replace(/(^|&)limit=\d+/, "");
  const token = state.tokens[state.page];
  if (token) p.set("token", token);
  $("status").textContent = "loading…";
  let r;
  try { r = await api("events?" + p.toString()); } catch (e) { $("status").textContent = ""; return showError(e); }
  const tbody = $("events").tBodies[0];
  tbody.replaceChildren(...r.events.map(eventRow));
  state.tokens[state.page + 1] = r.next;
  $("prev").disabled = state.page === 0;
  $("next").disabled = !r.next;
  let msg = `page ${state.page + 1}: ${r.events.length} event${r.events.length === 1 ? "" : "s"}`;
  msg += ` (read ${r.scanned} from the ${r.index ? r.index + " index" : "time index"})`;
  if (r.partial) msg += " — the scan budget ran out before the page was full: older events may still match, press Older";
  else if (!r.next) msg += " — end of the range";
  $("status").textContent = msg;
  $("detail").hidden = true;
}

$("next").addEventListener("click", () => { if (state.tokens[state.page + 1]) { state.page++; loadEvents(); } });
$("prev").addEventListener("click", () => { if (state.page > 0) { state.page--; loadEvents(); } });

function related(tableId, rows) {
  const tbody = $(tableId).tBodies[0];
  if (!rows.length) { tbody.replaceChildren(el("tr", {}, el("td", { class: "muted", text: "none in the window" }))); return; }
  tbody.replaceChildren(...rows.map(eventRow));
}

async function openEvent(id, tr) {
  showError(null);
  for (const r of document.querySelectorAll("tr.selected")) r.classList.remove("selected");
  if (tr) tr.classList.add("selected");
  let e;
  try { e = await api("event?id=" + encodeURIComponent(id)); } catch (err) { return showError(err); }
  if (state.view !== "events") location.hash = "#events";
  $("detail-title").textContent = (e.eventName || "Event") + " — " + fmtTime(e.eventTime);
  const dl = $("detail-summary");
  dl.replaceChildren();
  const fields = [["Event ID", e.eventId], ["Event source", e.eventSource], ["User", e.username],
    ["Access key", e.accessKeyId], ["Source IP", e.sourceIp], ["Error code", e.errorCode],
    ["Read-only", e.readOnly], ["Region", e.region], ["Account", e.account], ["Event type", e.eventType]];
  for (const [k, v] of fields) if (v !== null && v !== undefined) dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
  $("detail-resources").replaceChildren(...(e.resources.length ? e.resources.map((r) => el("li", { text: [r.type, r.name].filter(Boolean).join(" — ") })) : [el("li", { class: "muted", text: "none" })]));
  $("detail-json").textContent = JSON.stringify(e.record, null, 2);
  $("detail").hidden = false;
  $("related-user").tBodies[0].replaceChildren();
  $("related-ip").tBodies[0].replaceChildren();
  $("detail").scrollIntoView({ block: "start" });
  try {
    const rel = await api("related?id=" + encodeURIComponent(id));
    $("related-window").textContent = `(±${fmtSpan(rel.window)})`;
    related("related-user", rel.sameUser);
    related("related-ip", rel.sameSourceIp);
  } catch (err) { showError(err); }
}
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; });

// ---- overview --------------------------------------------------------------------------

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function drawChart(o) {
  const W = 960, H = 260, L = 44, B = 26, T = 10, R = 10;
  const n = o.buckets, series = o.series;
  const totals = new Array(n).fill(0);
  for (const s of series) s.counts.forEach((c, i) => { totals[i] += c; });
  const max = Math.max(1, ...totals);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "events over time by event source", id: "chart-svg" });
  const bw = (W - L - R) / n;
  const y = (v) => H - B - (v / max) * (H - B - T);
  for (const f of [0, 0.5, 1]) {
    const v = Math.round(max * f);
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e4e7ec" }));
    const t = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }); t.textContent = v; chart.append(t);
  }
  for (let i = 0; i < n; i++) {
    let base = 0;
    series.forEach((s, k) => {
      const c = s.counts[i]; if (!c) return;
      const r = svg("rect", { x: L + i * bw + 1, width: Math.max(1, bw - 2), y: y(base + c), height: y(base) - y(base + c), fill: COLORS[Math.min(k, COLORS.length - 1)] });
      const title = svg("title", {}); title.textContent = `${s.source}: ${c} (${fmtTime(o.bucketStart + i * o.bucketWidth)})`;
      r.append(title); chart.append(r); base += c;
    });
  }
  for (const [i, anchor] of [[0, "start"], [n, "end"]]) {
    const t = svg("text", { x: L + i * bw, y: H - 8, "text-anchor": anchor }); t.textContent = fmtTime(o.bucketStart + i * o.bucketWidth); chart.append(t);
  }
  const legend = el("div", { class: "legend" }, ...series.map((s, k) => el("span", {}, el("span", { class: "swatch c" + Math.min(k, COLORS.length - 1) }), s.source || "(none)")));
  $("overview-chart").replaceChildren(chart, legend);
}

function topTable(id, list) {
  const tbody = $(id).tBodies[0];
  if (!list.length) { tbody.replaceChildren(el("tr", {}, el("td", { class: "muted", text: "none" }))); return; }
  tbody.replaceChildren(...list.map((x) => el("tr", {}, el("td", { text: x.value }), el("td", { text: String(x.count) }))));
}

async function loadOverview() {
  showError(null);
  const p = filterQuery();
  let o;
  try { o = await api("overview?" + p.toString()); } catch (e) { return showError(e); }
  $("overview-range").textContent = `${fmtTime(o.start)} – ${fmtTime(o.end)}, per ${fmtSpan(o.bucketWidth)}`;
  drawChart(o);
  $("overview-note").textContent = o.complete ? `${o.total} events in the range.`
    : `The range holds more than the overview reads at once (${o.scanned} events): the counts cover ${fmtTime(o.coveredFrom)} onwards. Narrow the range for all of it.`;
  $("failed-logins").textContent = o.failedLogins;
  $("failed-logins").classList.toggle("bad", o.failedLogins > 0);
  $("sudo-failures").textContent = o.sudoFailures;
  $("sudo-failures").classList.toggle("bad", o.sudoFailures > 0);
  $("overview-total").textContent = o.total;
  topTable("top-users", o.topUsers);
  topTable("top-ips", o.topSourceIps);
  topTable("top-errors", o.topErrorCodes);
  const f = o.recentFailures;
  $("recent-failures").tBodies[0].replaceChildren(...(f.length ? f.map((x) => {
    const tr = el("tr", { "data-id": x.eventId }, el("td", { text: fmtTime(x.eventTime) }), el("td", { text: x.kind }),
      el("td", { text: x.username || "" }), el("td", { text: x.sourceIp || "" }), el("td", { class: "err", text: x.errorCode || "" }));
    tr.addEventListener("click", () => { location.hash = "#events"; openEvent(x.eventId, null); });
    return tr;
  }) : [el("tr", {}, el("td", { class: "muted", text: "none" }))]));
}

// ---- health ----------------------------------------------------------------------------

function rows(id, list, cells, empty) {
  const tbody = $(id).tBodies[0];
  if (!list || !list.length) { tbody.replaceChildren(el("tr", {}, el("td", { class: "muted", text: empty || "none" }))); return; }
  tbody.replaceChildren(...list.map((x) => el("tr", {}, ...cells(x).map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { text: c === null || c === undefined ? "" : String(c) }))))));
}

async function loadHealth() {
  showError(null);
  let h;
  try { h = await api("health"); } catch (e) { return showError(e); }
  const d = h.delivery, dl = $("delivery");
  dl.replaceChildren();
  const item = (k, v, bad) => dl.append(el("dt", { text: k }), el("dd", { class: bad ? "bad" : "", text: v || "—" }));
  item("Last log file delivered", d.latestDelivery);
  item("Last digest delivered", d.latestDigestDelivery);
  item("Last delivery attempt", d.latestAttempt);
  item("Delivery error", d.latestDeliveryError, !!d.latestDeliveryError);
  item("Digest delivery error", d.latestDigestDeliveryError, !!d.latestDigestDeliveryError);
  if (d.latestNotificationError) item("Notification error", d.latestNotificationError, true);
  const chains = [];
  for (const dest of h.destinations) {
    if (!dest.chains.length) chains.push({ dest, c: {} });
    for (const c of dest.chains) chains.push({ dest, c });
  }
  rows("destinations", chains, (x) => [x.dest.name, x.c.account, x.c.region, x.c.lastDigestEnd, x.c.filesAwaitingDigest, x.dest.undeliveredFiles, x.dest.pendingDigests]);
  rows("agents", h.agents, (a) => {
    const q = el("span", { class: a.silent ? "bad" : "", text: fmtSpan(a.silentFor) + (a.silent ? " (silent)" : "") });
    return [a.name, a.lastSeen, q, a.lastSeq, a.account, a.region];
  }, "no agent has sent anything yet");
  const params = (p) => Object.entries(p || {}).filter(([k]) => k !== "agent").map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  const rec = (x) => [fmtTime(x.eventTime), x.eventName, x.agent, params(x.requestParameters)];
  rows("gaps", h.gaps, rec);
  rows("silences", h.silences, rec);
  $("alerts-card").hidden = h.alerts === null;
  if (h.alerts) rows("alerts", h.alerts, (a) => [a.detectedAt, a.severity, a.rule, a.summary, a.count]);
  $("insights-card").hidden = h.insights === null;
  if (h.insights) rows("insights", h.insights, (i) => [fmtTime(i.eventTime), i.eventSource, i.eventName, i.insightType, i.state]);
}

// ---- routing ---------------------------------------------------------------------------

function route() {
  const v = (location.hash || "#events").slice(1);
  const view = ["events", "overview", "health"].includes(v) ? v : "events";
  show(view);
  if (view === "events") { if (!state.tokens.length) state.tokens = [null]; loadEvents(); }
  if (view === "overview") loadOverview();
  if (view === "health") loadHealth();
}

window.addEventListener("hashchange", () => { if (state.view !== "signin") route(); });
start();
