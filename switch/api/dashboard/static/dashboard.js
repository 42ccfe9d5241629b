// The operators' dashboard: sign in with an operator token, then poll GET /v1/dashboard
// every 2 s and draw what it says. No framework and no external asset; every element is
// built with the DOM (text never goes through innerHTML) and the charts are plain SVG.
"use strict";

(() => {
  const API = "/v1/dashboard";
  const TOKEN_KEY = "rtpswitch.operatorToken";
  const POLL_MS = 2000;
  const TIMEOUT_MS = 8000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    token: null, // the bearer token, also in sessionStorage
    generation: 0, // bumped at sign-in and sign-out: answers of an older one are dropped
    timer: null,
    data: null, // the last answer
  };

  // --- DOM helpers -----------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function build(make, tag, attrs, children) {
    const node = make(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const el = (tag, attrs, ...children) => build((t) => document.createElement(t), tag, attrs, children);
  const svg = (tag, attrs, ...children) => build((t) => document.createElementNS(SVG_NS, t), tag, attrs, children);

  // --- formatting ------------------------------------------------------------------

  const count = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));

  // Amounts come as decimal strings ("5000000.00"); they are grouped, never parsed as floats.
  function money(amount) {
    if (amount === null || amount === undefined) return "—";
    const text = String(amount);
    const negative = text.startsWith("-");
    const [whole, fraction] = text.replace(/^-/, "").split(".");
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (negative ? "−" : "") + grouped + (fraction === undefined ? "" : "." + fraction);
  }

  function millis(ms) {
    if (ms === null || ms === undefined) return null;
    if (ms < 1) return ms.toFixed(2);
    return ms < 100 ? ms.toFixed(1) : String(Math.round(ms));
  }

  const clock = (iso) => (iso ? new Date(iso).toISOString().slice(11, 19) : "—");

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    const pad = (n) => String(n).padStart(2, "0");
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor(s / 60) % 60)} min`;
    return `${Math.floor(s / 86400)} d ${pad(Math.floor(s / 3600) % 24)} h`;
  }

  // "InvalidCreditorAccountNumber" (an ISO reason's name) -> "Invalid creditor account number".
  const words = (text) =>
    /^[A-Z][A-Za-z0-9]*$/.test(text || "")
      ? text.replace(/([a-z0-9])([A-Z])/g, "$1 $2").replace(/ [A-Z](?=[a-z])/g, (c) => c.toLowerCase())
      : text || "";

  const rate = (v) => `${(v * 100).toFixed(v >= 0.1 ? 0 : 1)}%`;

  // --- the API ---------------------------------------------------------------------

  async function problemDetail(response) {
    try {
      const body = await response.json();
      if (body && (body.detail || body.title)) return String(body.detail || body.title);
    } catch (_) {
      // not JSON: say what the status says
    }
    return `The switch answered ${response.status} ${response.statusText}`.trim();
  }

  // {ok: true, data} or {ok: false, status, detail}; throws if the switch cannot be reached.
  async function fetchDashboard(token) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(API, {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        signal: abort.signal,
      });
      if (response.ok) return { ok: true, data: await response.json() };
      return { ok: false, status: response.status, detail: await problemDetail(response) };
    } finally {
      clearTimeout(timer);
    }
  }

  const refused = (result) => result.status === 401 || result.status === 403;
  const why = (error) => (error && error.name === "AbortError" ? "no answer in time" : "the switch cannot be reached");

  // --- signing in and out ----------------------------------------------------------

  function showLoginError(message) {
    const box = $("login-error");
    box.textContent = message ? message.charAt(0).toUpperCase() + message.slice(1) : "";
    box.hidden = !message;
    $("token").setAttribute("aria-invalid", message ? "true" : "false");
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      showLoginError("Enter an operator token.");
      $("token").focus();
      return;
    }
    const button = $("sign-in");
    button.disabled = true;
    button.textContent = "Signing in…";
    let result;
    try {
      result = await fetchDashboard(token);
    } catch (error) {
      result = { ok: false, status: 0, detail: `Cannot sign in: ${why(error)}.` };
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
    if (!result.ok) {
      showLoginError(result.detail);
      $("token").select();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    showLoginError("");
    start(token, result.data);
  }

  function start(token, data) {
    state.token = token;
    state.generation += 1;
    $("login").hidden = true;
    $("app").hidden = false;
    if (data) {
      render(data);
      live();
      schedule(state.generation);
    } else {
      poll(state.generation);
    }
    $("main").focus({ preventScroll: true });
  }

  function signOut(message) {
    state.generation += 1;
    clearTimeout(state.timer);
    state.token = null;
    state.data = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearView();
    $("app").hidden = true;
    $("login").hidden = false;
    showLoginError(message || "");
    document.title = "Switch operations";
    $("token").focus();
  }

  // --- polling ---------------------------------------------------------------------

  function schedule(generation) {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => poll(generation), POLL_MS);
  }

  async function poll(generation) {
    let result;
    try {
      result = await fetchDashboard(state.token);
    } catch (error) {
      result = { ok: false, status: 0, detail: why(error) };
    }
    if (generation !== state.generation) return; // signed out (or in again) meanwhile
    if (result.ok) {
      render(result.data);
      live();
    } else if (refused(result)) {
      signOut(result.detail);
      return;
    } else {
      stale(result.detail);
    }
    schedule(generation);
  }

  function live() {
    const box = $("connection");
    box.className = "connection live";
    box.textContent = "Live";
    box.removeAttribute("title");
    $("app").classList.remove("stale");
  }

  // The figures on the page stay, dimmed, until an answer comes again.
  function stale(detail) {
    const box = $("connection");
    box.className = "connection stale";
    box.replaceChildren("Reconnecting…", el("span", { class: "sr-only" }, ` ${detail}`));
    const last = state.data ? `; the figures shown are from ${clock(state.data.at)} UTC` : "";
    box.title = `${detail}${last}`;
    $("app").classList.toggle("stale", Boolean(state.data));
  }

  // --- rendering -------------------------------------------------------------------

  function render(data) {
    state.data = data;
    renderHeader(data);
    renderTotals(data.totals || {});
    renderLatency(data.latency_ms || {});
    renderCharts(data.series || []);
    renderParticipants(data.participants || []);
    renderRejects(data.recent_rejects || []);
    renderAlerts(data.alerts || []);
  }

  function renderHeader(data) {
    const sw = data.switch || {};
    const status = $("switch-status");
    status.textContent = sw.engine_running ? "Engine running" : "Engine stopped";
    status.className = `pill ${sw.engine_running ? "ok" : "bad"}`;
    $("uptime").textContent = duration(sw.uptime_seconds);
    $("store").textContent = sw.store === "postgresql" ? "PostgreSQL" : sw.store === "sqlite" ? "SQLite" : sw.store || "—";
    $("currency").textContent = data.currency || "—";
    $("updated").textContent = `${clock(data.at)} UTC`;
    const alerts = (data.alerts || []).length;
    document.title = `${alerts ? `(${alerts}) ` : ""}${sw.engine_running ? "" : "Stopped · "}Switch operations`;
  }

  function renderTotals(totals) {
    for (const dd of $("totals").querySelectorAll("dd[data-total]")) {
      dd.textContent = count(totals[dd.dataset.total]);
    }
  }

  function renderLatency(latency) {
    for (const dd of $("latency").querySelectorAll("dd[data-latency]")) {
      const value = millis(latency[dd.dataset.latency]);
      dd.replaceChildren(...(value === null ? ["—"] : [value, el("span", { class: "unit" }, "ms")]));
    }
    $("latency-count").textContent = latency.count ? `${count(latency.count)} recent payments` : "";
  }

  const THROUGHPUT = [
    { key: "payments_per_second", label: "Payments", cls: "s-payments", area: true },
    { key: "settled_per_second", label: "Settled", cls: "s-settled" },
    { key: "rejected_per_second", label: "Rejected", cls: "s-rejected" },
    { key: "timed_out_per_second", label: "Timed out", cls: "s-timed_out" },
  ];
  const REJECTS = [{ key: "reject_rate", label: "Reject rate", cls: "s-rate", area: true }];

  function renderCharts(series) {
    const last = series.length ? series[series.length - 1] : null;
    const perSecond = (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1));
    lineChart($("throughput-chart"), series, THROUGHPUT, {
      format: (v, d) => v.toFixed(d),
      minTop: 1,
      tipFormat: (v) => `${perSecond(v)}/s`,
    });
    legend($("throughput-legend"), THROUGHPUT, last, (v) => `${perSecond(v)}/s`);
    lineChart($("reject-chart"), series, REJECTS, {
      format: (v, d) => `${(v * 100).toFixed(Math.max(0, d - 2))}%`,
      minTop: 0.05,
      tipFormat: rate,
    });
    legend($("reject-legend"), REJECTS, last, rate);
    const minutes = series.length > 1 ? duration((Date.parse(last.at) - Date.parse(series[0].at)) / 1000) : null;
    const span = minutes ? ` over the last ${minutes}` : "";
    const now = (defs, f) => defs.map((d) => `${d.label} ${last ? f(last[d.key] || 0) : "none"}`).join(", ");
    $("throughput-chart").setAttribute("aria-label", `Throughput per second${span}; latest: ${now(THROUGHPUT, perSecond)}`);
    $("reject-chart").setAttribute("aria-label", `Reject rate${span}; latest: ${now(REJECTS, rate)}`);
  }

  function legend(list, defs, last, format) {
    list.replaceChildren(
      ...defs.map((d) =>
        el("li", {}, el("span", { class: `swatch ${d.cls}`, "aria-hidden": "true" }), `${d.label} `, el("b", {}, last ? format(last[d.key] || 0) : "—")),
      ),
    );
  }

  // A step of 1, 2 or 5 times a power of ten, about `raw`.
  function niceStep(raw) {
    const power = 10 ** Math.floor(Math.log10(raw));
    const f = raw / power;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
  }

  // Round instants (every 5 s, 10 s, ... 1 h) between t0 and t0 + span, at most `most` of them.
  function timeTicks(t0, span, most) {
    if (span <= 0) return [t0];
    const every = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].map((s) => s * 1000).find((ms) => span / ms <= most) || 7200000;
    const ticks = [];
    for (let t = Math.ceil(t0 / every) * every; t <= t0 + span; t += every) ticks.push(t);
    return ticks;
  }

  // Lines (one per def) over time, in the box's own size; the y axis starts at 0.
  function lineChart(box, series, defs, { format, minTop, tipFormat }) {
    const width = Math.max(box.clientWidth, 240);
    const height = Math.max(box.clientHeight, 120);
    const m = { left: 44, right: 12, top: 8, bottom: 22 };
    const innerW = width - m.left - m.right;
    const innerH = height - m.top - m.bottom;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, "aria-hidden": "true", focusable: "false" });
    box.dataset.points = String(series.length);
    if (!series.length) {
      root.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "none" }, "No data yet"));
      box.replaceChildren(root);
      return;
    }

    let top = minTop;
    for (const point of series) for (const d of defs) top = Math.max(top, point[d.key] || 0);
    const step = niceStep(top / 4);
    top = Math.ceil(top / step - 1e-9) * step;
    const y = (v) => m.top + innerH - (Math.max(0, v || 0) / top) * innerH;

    const times = series.map((p) => Date.parse(p.at));
    const t0 = times[0];
    const span = times[times.length - 1] - t0;
    const x = (i) => m.left + (span > 0 ? ((times[i] - t0) / span) * innerW : innerW);

    const decimals = step >= 1 ? 0 : Math.ceil(-Math.log10(step) - 1e-9);
    for (let k = 0; k * step <= top + step / 2; k += 1) {
      const v = k * step;
      root.append(
        svg("line", { class: "gridline", x1: m.left, x2: width - m.right, y1: y(v), y2: y(v) }),
        svg("text", { class: "axis", x: m.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v, decimals)),
      );
    }
    for (const t of timeTicks(t0, span, Math.max(2, Math.floor(innerW / 85)))) {
      const at = m.left + (span > 0 ? ((t - t0) / span) * innerW : innerW);
      const anchor = at > width - m.right - 30 ? "end" : at < m.left + 30 ? "start" : "middle";
      root.append(svg("text", { class: "axis", x: at, y: height - 6, "text-anchor": anchor }, new Date(t).toISOString().slice(11, 19)));
    }

    // The first series is drawn last, on top; areas go under every line.
    const lines = [];
    for (const d of defs) {
      const points = series.map((p, i) => `${x(i).toFixed(1)},${y(p[d.key]).toFixed(1)}`);
      const path = `M${points.join("L")}`;
      if (d.area && series.length > 1) {
        const base = y(0).toFixed(1);
        root.append(svg("path", { class: `area ${d.cls}`, d: `${path}L${x(series.length - 1).toFixed(1)},${base}L${x(0).toFixed(1)},${base}Z` }));
      }
      lines.push(svg("path", { class: `line ${d.cls}`, d: path, "data-series": d.key }));
      const last = series.length - 1;
      lines.push(svg("circle", { class: `dot ${d.cls}`, cx: x(last), cy: y(series[last][d.key]), r: 3.5 }));
    }
    root.append(...lines.reverse());
    const tip = el("div", { class: "tip", hidden: true });
    box.replaceChildren(root, tip);
    crosshair(box, root, tip, { series, defs, x, y, times, top: m.top, bottom: height - m.bottom, tipFormat });
  }

  const pointers = new WeakMap(); // chart box -> the pointer's x in it, while it is over it

  // A vertical line, dots and the values of the point nearest the pointer; it stays where
  // the pointer is when the chart is drawn again.
  function crosshair(box, root, tip, { series, defs, x, y, times, top, bottom, tipFormat }) {
    const line = svg("line", { class: "cross", y1: top, y2: bottom, visibility: "hidden" });
    const dots = defs.map((d) => svg("circle", { class: `dot ${d.cls}`, r: 4, visibility: "hidden" }));
    root.append(line, ...dots);
    const show = (px) => {
      let i = 0;
      while (i + 1 < series.length && Math.abs(x(i + 1) - px) <= Math.abs(x(i) - px)) i += 1;
      const at = x(i);
      line.setAttribute("x1", at);
      line.setAttribute("x2", at);
      line.setAttribute("visibility", "visible");
      defs.forEach((d, k) => {
        dots[k].setAttribute("cx", at);
        dots[k].setAttribute("cy", y(series[i][d.key]));
        dots[k].setAttribute("visibility", "visible");
      });
      tip.replaceChildren(
        el("div", { class: "tip-time" }, `${new Date(times[i]).toISOString().slice(11, 19)} UTC`),
        ...defs.map((d) => el("div", {}, el("span", { class: `swatch ${d.cls}` }), `${d.label} `, el("b", {}, tipFormat(series[i][d.key] || 0)))),
      );
      tip.hidden = false;
      const left = at + 14 + tip.offsetWidth > box.clientWidth ? at - 14 - tip.offsetWidth : at + 14;
      tip.style.left = `${Math.max(0, left)}px`;
    };
    const hide = () => {
      tip.hidden = true;
      line.setAttribute("visibility", "hidden");
      for (const dot of dots) dot.setAttribute("visibility", "hidden");
    };
    box.onpointermove = (event) => {
      const px = event.clientX - box.getBoundingClientRect().left;
      pointers.set(box, px);
      show(px);
    };
    box.onpointerleave = () => {
      pointers.delete(box);
      hide();
    };
    if (pointers.has(box)) show(pointers.get(box));
  }

  const STATUS = { active: ["Active", "ok"], suspended: ["Suspended", "warn"], signed_off: ["Signed off", ""] };

  function renderParticipants(participants) {
    const ccy = state.data && state.data.currency ? ` ${state.data.currency}` : "";
    const rows = participants.map((p) => {
      const [label, cls] = STATUS[p.status] || [p.status, ""];
      const position = p.low_position
        ? el("span", { title: `Available ${money(p.available)}${ccy} is below the threshold of ${money(p.low_position_threshold)}${ccy}` },
            el("span", { class: "badge warn", "data-testid": "low-position" }, "▲ Low position"),
            el("span", { class: "threshold" }, `under ${money(p.low_position_threshold)}`))
        : el("span", { class: "muted" }, "OK");
      return el(
        "tr",
        { "data-participant": p.id, "data-low-position": p.low_position ? "true" : "false", class: p.low_position ? "low" : null },
        el("td", { class: "nowrap" }, el("span", { class: "id" }, p.id), el("span", { class: "name" }, p.name || "")),
        el("td", {}, el("span", { class: `pill ${cls}` }, label)),
        el("td", { "data-testid": "connected" }, connection(p.connected)),
        el("td", { class: "num" }, money(p.available)),
        el("td", { class: "num" }, money(p.reserved)),
        el("td", { class: "nowrap" }, position),
      );
    });
    fillTable($("participants"), rows, "No participants");
  }

  // true, false, or null when the transport cannot tell.
  function connection(connected) {
    if (connected === null || connected === undefined) return el("span", { class: "muted" }, "Unknown");
    return el("span", { class: connected ? "yes" : "no" }, connected ? "Yes" : "No");
  }

  function renderRejects(rejects) {
    const rows = rejects.map((r) =>
      el(
        "tr",
        { "data-testid": "reject-row", "data-payment": r.payment_id },
        el("td", {}, clock(r.at)),
        el("td", { class: "id", title: r.uetr ? `UETR ${r.uetr}` : null }, r.payment_id),
        el("td", { class: "id" }, r.debtor_agent || "—"),
        el("td", { class: "id" }, r.creditor_agent || "—"),
        el("td", { class: "num" }, money(r.amount)),
        el("td", { "data-testid": "reason" },
          r.reason ? el("span", { class: "badge code bad" }, r.reason) : null,
          el("span", { class: "reason-text" }, words(r.reason_text) || (r.reason ? "" : "no reason given"))),
      ),
    );
    fillTable($("recent-rejects"), rows, "No rejected payments");
  }

  function renderAlerts(alerts) {
    const items = alerts.map((a) => {
      const critical = a.severity === "critical";
      const meta = [a.participant, a.since ? `since ${clock(a.since)} UTC` : null].filter(Boolean).join(" · ");
      return el(
        "li",
        { class: critical ? "critical" : "warning", "data-alert": a.code, "data-severity": a.severity, "data-participant": a.participant },
        el("span", { class: `badge ${critical ? "bad" : "warn"}` }, critical ? "Critical" : "Warning"),
        el("span", { class: "message" }, a.message),
        meta ? el("span", { class: "meta" }, meta) : null,
      );
    });
    $("alerts").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "No active alerts")]));
    const badge = $("alerts-count");
    badge.hidden = !alerts.length;
    badge.textContent = String(alerts.length);
    badge.className = `count${alerts.some((a) => a.severity === "critical") ? " critical" : ""}`;
  }

  function fillTable(table, rows, empty) {
    const columns = table.tHead.rows[0].cells.length;
    const body = rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, empty))];
    table.tBodies[0].replaceChildren(...body);
  }

  function clearView() {
    for (const id of ["participants", "recent-rejects"]) fillTable($(id), [], "No data yet");
    $("alerts").replaceChildren(el("li", { class: "empty" }, "No data yet"));
    $("alerts-count").hidden = true;
    for (const dd of document.querySelectorAll("#totals dd, #latency dd, .facts dd")) dd.textContent = "—";
    for (const id of ["throughput-chart", "reject-chart"]) {
      $(id).replaceChildren();
      $(id).dataset.points = "0";
    }
    for (const id of ["throughput-legend", "reject-legend"]) $(id).replaceChildren();
    $("latency-count").textContent = "";
    $("switch-status").textContent = "—";
    $("switch-status").className = "pill";
    $("connection").className = "connection";
    $("app").classList.remove("stale");
    $("connection").textContent = "Connecting…";
  }

  // --- start -----------------------------------------------------------------------

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => state.data && renderCharts(state.data.series || []), 120);
  });
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved, null);
  else $("token").focus();
})();
