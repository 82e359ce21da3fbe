// p2l-router console: every view reads the admin API with the key typed on the sign-in
// form (kept in sessionStorage, sent as "Authorization: Bearer <key>" to this origin only).
// Data is put into the page with textContent / DOM nodes only, never as HTML.
"use strict";

const KEY_STORE = "p2l-console-key";
const POLL_DECISIONS_MS = 2000;
const POLL_TEAMS_MS = 10000;
const POLL_STATS_MS = 30000;
const WHATIF_LAMBDAS = [0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200];

const $ = (id) => document.getElementById(id);
const state = { key: null, teams: [], seen: new Set(), older: [], cursor: null, live: true };
const timers = [];

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, body) {
  const init = { headers: { Authorization: `Bearer ${state.key}` }, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (exc) {
    throw new ApiError(0, `the router did not answer (${exc.message})`);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (exc) {
    data = null;
  }
  if (!resp.ok) {
    const msg = (data && data.error && data.error.message) || `HTTP ${resp.status}`;
    throw new ApiError(resp.status, msg);
  }
  return data;
}

// ------------------------------------------------------------------ formatting

function fmtUsd(v) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "—";
  const n = Number(v);
  if (n === 0) return "$0";
  const a = Math.abs(n);
  if (a >= 100) return `$${n.toFixed(0)}`;
  if (a >= 1) return `$${n.toFixed(2)}`;
  if (a >= 0.01) return `$${n.toFixed(4)}`;
  return `$${n.toPrecision(3)}`;
}
// Axis ticks: two significant digits are enough and keep labels from running together.
const fmtUsdAxis = (v) => (v === 0 ? "$0" : `$${Number(v.toPrecision(2))}`);
const fmtPct = (v) => (v === null || v === undefined ? "—" : `${(100 * v).toFixed(1)}%`);
const fmtNum = (v, d = 2) =>
  v === null || v === undefined || Number.isNaN(Number(v)) ? "—" : Number(v).toFixed(d);
const fmtMs = (v) => fmtNum(v, 1);

function fmtTime(ts, withDate) {
  const s = P2LCharts.toEpochSeconds(ts);
  if (s === null) return String(ts);
  const d = new Date(s * 1000);
  return withDate ? d.toLocaleString() : d.toLocaleTimeString([], { hour12: false });
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function td(text, cls) {
  return el("td", { class: cls, text: text === null || text === undefined ? "—" : String(text) });
}

function showError(id, exc) {
  $(id).textContent = exc ? (exc.status ? `${exc.message} (HTTP ${exc.status})` : exc.message) : "";
}

function announce(text) {
  $("status").textContent = text;
}

// ------------------------------------------------------------------ sign-in

async function signIn(key) {
  state.key = key;
  const teams = await api("/v1/admin/teams");
  sessionStorage.setItem(KEY_STORE, key);
  state.teams = teams.data || [];
  $("signin").hidden = true;
  $("app").hidden = false;
  $("nav").hidden = false;
  $("whoami").hidden = false;
  const names = state.teams.map((t) => t.team);
  $("who-label").textContent =
    `Signed in: ${names.length} team${names.length === 1 ? "" : "s"} visible`;
  fillTeamSelects(names);
  renderTeams(state.teams);
  startPolling();
}

function signOut(message) {
  for (const t of timers.splice(0)) clearInterval(t);
  sessionStorage.removeItem(KEY_STORE);
  state.key = null;
  state.seen.clear();
  state.older = [];
  $("app").hidden = true;
  $("nav").hidden = true;
  $("whoami").hidden = true;
  $("signin").hidden = false;
  $("key").value = "";
  $("signin-error").textContent = message || "";
  $("key").focus();
}

// A rejected key anywhere ends the session; other errors stay in their section.
function guard(errorId) {
  return (exc) => {
    if (exc.status === 401) signOut(`Signed out: ${exc.message}`);
    else showError(errorId, exc);
  };
}

function startPolling() {
  refreshDecisions().catch(guard("decisions-error"));
  refreshStats().catch(guard("stats-error"));
  timers.push(setInterval(() => state.live && !document.hidden && pollDecisions(), POLL_DECISIONS_MS));
  timers.push(setInterval(() => !document.hidden && refreshTeams(), POLL_TEAMS_MS));
  timers.push(setInterval(() => !document.hidden && refreshStats().catch(guard("stats-error")), POLL_STATS_MS));
}

function fillTeamSelects(names) {
  for (const id of ["f-team", "w-team"]) {
    const sel = $(id);
    const keep = sel.value;
    sel.replaceChildren(...(id === "f-team" ? [el("option", { value: "", text: "all" })] : []));
    for (const n of names) sel.append(el("option", { value: n, text: n }));
    if (names.includes(keep)) sel.value = keep;
  }
}

// ------------------------------------------------------------------ teams

async function refreshTeams() {
  try {
    const teams = await api("/v1/admin/teams");
    state.teams = teams.data || [];
    renderTeams(state.teams);
    showError("teams-error", null);
  } catch (exc) {
    guard("teams-error")(exc);
  }
}

function renderTeams(teams) {
  const list = $("team-list");
  list.replaceChildren();
  for (const t of teams) {
    const limit = t.limit_usd;
    const card = el("article", { class: "team card", "data-team": t.team });
    card.append(el("h3", { text: t.team }));
    const lam =
      t.cost_sensitivity_now !== undefined && t.cost_sensitivity_now !== t.cost_sensitivity
        ? `λ ${fmtNum(t.cost_sensitivity_now)} now (set ${fmtNum(t.cost_sensitivity)})`
        : `λ ${fmtNum(t.cost_sensitivity)}`;
    card.append(el("p", { class: "muted", text: `${t.strategy} · ${lam} · per ${t.period || "—"}` }));
    const spentLine = el("p", { class: "spent" });
    spentLine.append(el("strong", { class: "team-spent", text: fmtUsd(t.spent_usd) }));
    spentLine.append(limit === null || limit === undefined ? " spent (no budget)" : ` of ${fmtUsd(limit)}`);
    card.append(spentLine);
    if (limit) {
      const share = (v) => Math.max(0, Math.min(1, (Number(v) || 0) / limit));
      const bar = el("div", {
        class: "bar",
        role: "img",
        "aria-label":
          `${t.team}: spent ${fmtPct(share(t.spent_usd))} of the budget, ` +
          `${fmtPct(share(t.reserved_usd))} reserved, ${fmtPct(t.elapsed_share)} of the period elapsed`,
      });
      const spent = el("span", { class: "bar-spent" });
      spent.style.width = `${100 * share(t.spent_usd)}%`;
      const reserved = el("span", { class: "bar-reserved" });
      reserved.style.width = `${100 * Math.min(share(t.reserved_usd), 1 - share(t.spent_usd))}%`;
      const pace = el("span", { class: "bar-pace", title: "share of the period elapsed" });
      pace.style.left = `${100 * Math.max(0, Math.min(1, t.elapsed_share || 0))}%`;
      if (share(t.spent_usd) > (t.elapsed_share || 0)) bar.classList.add("ahead");
      bar.append(spent, reserved, pace);
      card.append(bar);
    }
    const proj = t.projected_spend_usd;
    const over = limit && proj !== null && proj !== undefined && proj > limit;
    const details = el("dl", { class: "facts" });
    const fact = (k, v, cls) => details.append(el("dt", { text: k }), el("dd", { class: cls, text: v }));
    fact("Reserved", fmtUsd(t.reserved_usd));
    if (t.journaled_usd) fact("Journaled", fmtUsd(t.journaled_usd));
    fact("Period elapsed", fmtPct(t.elapsed_share));
    fact("Projected at period end", `${fmtUsd(proj)}${over ? " — over budget" : ""}`, over ? "warn" : null);
    if (t.period_end) fact("Resets", fmtTime(t.period_end, true));
    card.append(details);
    list.append(card);
  }
  if (!teams.length) list.append(el("p", { class: "muted", text: "No teams visible to this key." }));
}

// ------------------------------------------------------------------ traffic

async function refreshStats() {
  const opt = $("stats-since").selectedOptions[0];
  const q = new URLSearchParams({ since: opt.value, bucket: opt.dataset.bucket });
  const stats = await api(`/v1/admin/stats?${q}`);
  showError("stats-error", null);
  renderShare(stats.groups || []);
  renderStatsTable(stats.groups || []);
  const from = P2LCharts.toEpochSeconds(stats.since);
  const to = Date.now() / 1000;
  const buckets = stats.buckets || [];
  P2LCharts.drawTimeChart($("spend-chart"), buckets, (b) => b.spend_usd, fmtUsdAxis, from, to);
  P2LCharts.drawTimeChart($("req-chart"), buckets, (b) => b.requests, (v) => String(v), from, to);
}

function renderShare(groups) {
  const byModel = new Map();
  for (const g of groups) byModel.set(g.model, (byModel.get(g.model) || 0) + (g.requests || 0));
  const total = [...byModel.values()].reduce((a, b) => a + b, 0);
  const box = $("share-bars");
  box.replaceChildren();
  if (!total) {
    box.append(el("p", { class: "muted empty", text: "No traffic in this window yet." }));
    return;
  }
  const rows = [...byModel.entries()].sort((a, b) => b[1] - a[1]);
  rows.forEach(([model, n]) => {
    const fill = el("span", { class: "share-fill" });
    fill.style.width = `${(100 * n) / total}%`;
    fill.style.background = P2LCharts.colorFor(model || "(none)");
    box.append(
      el(
        "div",
        { class: "share-row", role: "listitem" },
        el("span", { class: "share-name", text: model || "(none)" }),
        el("span", { class: "share-track", "aria-hidden": "true" }, fill),
        el("span", { class: "share-val", text: `${fmtPct(n / total)} (${n})` }),
      ),
    );
  });
}

function renderStatsTable(groups) {
  const body = $("stats-table").tBodies[0];
  body.replaceChildren();
  for (const g of groups) {
    body.append(
      el(
        "tr",
        {},
        td(g.team),
        td(g.model),
        td(g.requests, "num"),
        td(fmtPct(g.share), "num"),
        td(fmtUsd(g.spend_usd), "num"),
        td(fmtUsd(g.cache_saved_usd), "num"),
        td(`${fmtMs(g.scoring_ms_p50)} / ${fmtMs(g.scoring_ms_p99)}`, "num"),
        td(`${fmtMs(g.upstream_ms_p50)} / ${fmtMs(g.upstream_ms_p99)}`, "num"),
        td(`${fmtMs(g.overhead_ms_p50)} / ${fmtMs(g.overhead_ms_p99)}`, "num"),
        td(g.fallbacks, "num"),
        td(g.errors, "num"),
      ),
    );
  }
}

// ------------------------------------------------------------------ decisions

function decisionQuery(cursor) {
  const q = new URLSearchParams({ limit: "50" });
  const team = $("f-team").value;
  const model = $("f-model").value.trim();
  const status = $("f-status").value;
  if (team) q.set("team", team);
  if (model) q.set("model", model);
  if (status) q.set("status", status);
  if (cursor) q.set("cursor", cursor);
  return q;
}

async function refreshDecisions() {
  const page = await api(`/v1/admin/decisions?${decisionQuery()}`);
  showError("decisions-error", null);
  const rows = page.data || [];
  const fresh = rows.filter((d) => !state.seen.has(d.decision_id));
  const first = state.seen.size === 0;
  for (const d of rows) state.seen.add(d.decision_id);
  if (state.cursor === null || !state.older.length) state.cursor = page.next_cursor || null;
  renderDecisions([...rows, ...state.older], first ? new Set() : new Set(fresh.map((d) => d.decision_id)));
  if (!first && fresh.length) announce(`${fresh.length} new decision${fresh.length > 1 ? "s" : ""}`);
}

let polling = false;
async function pollDecisions() {
  if (polling) return; // a slow answer is not overtaken by the next tick
  polling = true;
  try {
    await refreshDecisions();
  } catch (exc) {
    guard("decisions-error")(exc);
  } finally {
    polling = false;
  }
}

function renderDecisions(rows, fresh) {
  const body = $("decision-table").tBodies[0];
  body.replaceChildren();
  const shown = new Set();
  for (const d of rows) {
    if (shown.has(d.decision_id)) continue;
    shown.add(d.decision_id);
    const ok = d.status === 200 || d.status === "ok";
    const open = el("button", {
      type: "button",
      class: "linklike",
      text: fmtTime(d.ts),
      "aria-label": `Open decision ${d.decision_id} at ${fmtTime(d.ts, true)}`,
      onclick: (ev) => {
        ev.stopPropagation();
        openDecision(d.decision_id);
      },
    });
    const tr = el(
      "tr",
      { "data-decision-id": d.decision_id, class: fresh.has(d.decision_id) ? "fresh" : null },
      el("td", {}, open),
      td(d.team),
      td(d.served_by || d.chosen || d.requested_model),
      td(d.status, ok ? "ok" : "bad"),
      td(fmtUsd(d.cost_usd !== null && d.cost_usd !== undefined ? d.cost_usd : d.expected_cost_usd), "num"),
      td(fmtMs(d.overhead_ms), "num"),
      td(d.error || d.reason, "wide-only reason"),
    );
    tr.addEventListener("click", () => openDecision(d.decision_id));
    body.append(tr);
  }
  if (!rows.length) {
    body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "No decisions yet." })));
  }
  $("decisions-more").hidden = !state.cursor;
}

async function loadOlder() {
  if (!state.cursor) return;
  try {
    const page = await api(`/v1/admin/decisions?${decisionQuery(state.cursor)}`);
    for (const d of page.data || []) state.seen.add(d.decision_id);
    state.older.push(...(page.data || []));
    state.cursor = page.next_cursor || null;
    await refreshDecisions();
  } catch (exc) {
    guard("decisions-error")(exc);
  }
}

function restartDecisions() {
  state.seen.clear();
  state.older = [];
  state.cursor = null;
  refreshDecisions().catch(guard("decisions-error"));
}

let openedId = null;
async function openDecision(id) {
  openedId = id; // the row is redrawn by polling: focus returns to its current button
  const dlg = $("decision-dialog");
  const body = $("dd-body");
  body.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  $("dd-title").textContent = `Decision ${id}`;
  if (!dlg.open) dlg.showModal();
  try {
    renderDecisionDetail(await api(`/v1/admin/decisions/${encodeURIComponent(id)}`));
  } catch (exc) {
    body.replaceChildren(el("p", { class: "error", role: "alert", text: exc.message }));
  }
}

function renderDecisionDetail(d) {
  const body = $("dd-body");
  body.replaceChildren();
  const facts = el("dl", { class: "facts detail" });
  const fact = (k, v, cls) => facts.append(el("dt", { text: k }), el("dd", { class: cls, text: v ?? "—" }));
  fact("Time", fmtTime(d.ts, true));
  fact("Team", d.team);
  fact("Requested", d.requested_model);
  fact("Strategy", `${d.strategy ?? "—"} (λ ${fmtNum(d.cost_sensitivity)})`);
  fact("Chosen", d.chosen);
  fact("Served by", d.served_by);
  fact("Status", d.error ? `${d.status}: ${d.error}` : d.status, d.error ? "warn" : null);
  fact("Reason", d.reason, "reason-full");
  fact("Tokens", `${d.prompt_tokens ?? "—"} in, ${d.completion_tokens ?? "—"} out (${d.usage_source ?? "—"})`);
  const cls = (v) => (v ?? "—");
  fact("Input classes", `${cls(d.cached_prompt_tokens)} cached, ${cls(d.cache_write_tokens)} written 5m, ` +
    `${cls(d.cache_write_1h_tokens)} written 1h; ${cls(d.reasoning_tokens)} reasoning (${d.upstream_api ?? "—"})`);
  fact("Cost", `${fmtUsd(d.cost_usd)} (expected ${fmtUsd(d.expected_cost_usd)}; caching saved ${fmtUsd(d.cache_saved_usd)})`);
  fact("Budget left", fmtUsd(d.budget_remaining_usd));
  fact("Attempts", `${d.attempts ?? "—"}${d.stream ? ", streamed" : ""}`);
  const s = d.session;
  if (s) {
    const prev = s.previous_model ? `after ${s.previous_model}, ${s.kept ? "kept" : "switched"}` : "first turn";
    fact("Session", `${s.id} (${s.source}), turn ${s.turn}: ${prev}`);
    if (s.reason) fact("Switch", s.reason, "reason-full");
  }
  body.append(facts);
  if (d.prompt) body.append(el("h3", { text: "Prompt" }), el("pre", { class: "prompt", text: d.prompt }));

  body.append(el("h3", { text: "Timings" }));
  const timing = el("dl", { class: "facts" });
  for (const [k, v] of [
    ["Scoring", d.scoring_ms], ["Upstream", d.upstream_ms], ["First token", d.ttft_ms], ["Router overhead", d.overhead_ms],
  ]) {
    timing.append(el("dt", { text: k }), el("dd", { text: v === null || v === undefined ? "—" : `${fmtMs(v)} ms` }));
  }
  body.append(timing);

  const cands = d.candidates || [];
  const ctable = el("table", { class: "candidates" }, el("caption", { text: "Candidates (best first)" }));
  ctable.append(
    el("thead", {}, el("tr", {}, ...["Model", "Coefficient", "Score", "Expected cost", "Without cache"].map((h, i) =>
      el("th", { scope: "col", class: i ? "num" : null, text: h })))),
  );
  const cbody = el("tbody");
  for (const c of cands) {
    const chosen = c.model === d.chosen;
    // cache-aware sessions: the cost with the cache priced in, and without it.
    const cold = c.uncached_cost_usd === undefined ? "—" : fmtUsd(c.uncached_cost_usd);
    cbody.append(
      el("tr", { class: chosen ? "chosen" : null },
        td(chosen ? `${c.model} (chosen)` : c.model), td(fmtNum(c.coef, 4), "num"),
        td(fmtNum(c.score, 4), "num"), td(fmtUsd(c.expected_cost_usd), "num"), td(cold, "num")),
    );
  }
  if (!cands.length) cbody.append(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "none scored" })));
  ctable.append(cbody);
  body.append(el("div", { class: "table-wrap" }, ctable));

  const fbs = d.fallbacks || [];
  body.append(el("h3", { text: `Fallbacks (${fbs.length})` }));
  if (fbs.length) {
    const ftable = el("table", { class: "fallbacks" });
    ftable.append(el("thead", {}, el("tr", {}, ...["Model", "Error", "Message", "Attempts", "May have arrived"].map((h) =>
      el("th", { scope: "col", text: h })))));
    const fbody = el("tbody");
    for (const f of fbs) {
      fbody.append(el("tr", {}, td(f.model), td(f.error), td(f.message), td(f.attempts), td(f.may_have_arrived ? "yes" : "no")));
    }
    ftable.append(fbody);
    body.append(el("div", { class: "table-wrap" }, ftable));
  } else {
    body.append(el("p", { class: "muted", text: "None: the first choice answered." }));
  }
}

// ------------------------------------------------------------------ route preview

async function preview(prompt) {
  const messages = [{ role: "user", content: prompt }];
  let result;
  let teamOnly = false;
  try {
    result = await api("/v1/admin/route-preview", { messages });
  } catch (exc) {
    if (![403, 404].includes(exc.status)) throw exc;
    result = await api("/v1/leaderboard", { messages }); // a team key: its own board only
    teamOnly = true;
  }
  $("preview-result").hidden = false;
  const meta = [`head ${result.head ?? "—"}`];
  if (result.scoring_ms !== undefined) meta.push(`scored in ${fmtMs(result.scoring_ms)} ms`);
  if (teamOnly) meta.push(`leaderboard of team ${result.team}; each team's pick needs the admin key`);
  $("preview-meta").textContent = meta.join(" · ");

  const picks = $("picks-table");
  picks.hidden = teamOnly;
  const pbody = picks.tBodies[0];
  pbody.replaceChildren();
  for (const t of result.teams || []) {
    pbody.append(
      t.error
        ? el("tr", { "data-team": t.team }, td(t.team), el("td", { colspan: "4", class: "warn", text: t.error }))
        : el("tr", { "data-team": t.team }, td(t.team), td(t.chosen), td(fmtUsd(t.expected_cost_usd), "num"),
          td(t.strategy), td(t.reason, "wide-only reason")),
    );
  }
  const bbody = $("board-table").tBodies[0];
  bbody.replaceChildren();
  (result.models || []).forEach((m, i) => {
    bbody.append(
      el("tr", { class: m.routable ? null : "muted" }, td(i + 1, "num"), td(m.model),
        td(fmtNum(m.coef, 4), "num"), td(fmtPct(m.p_not_bad), "num"),
        td(fmtUsd(m.expected_cost_usd), "num"), td(m.routable ? "yes" : "no")),
    );
  });
  announce(`Leaderboard ready: ${(result.models || []).length} models`);
}

// ------------------------------------------------------------------ what-if

let whatif = null;
async function runWhatIf(team) {
  const cur = state.teams.find((t) => t.team === team);
  const lambdas = [...new Set([...WHATIF_LAMBDAS, ...(cur ? [Number(cur.cost_sensitivity)] : [])])]
    .filter((x) => Number.isFinite(x))
    .sort((a, b) => a - b);
  const res = await api("/v1/admin/whatif", { team, cost_sensitivity: lambdas, limit: 200 });
  const points = (res.points || []).slice().sort((a, b) => a.cost_sensitivity - b.cost_sensitivity);
  if (!points.length) throw new ApiError(0, "no recent prompts to replay for this team");
  whatif = { team, points };
  const slider = $("w-slider");
  slider.max = String(points.length - 1);
  let start = points.findIndex((p) => cur && p.cost_sensitivity === Number(cur.cost_sensitivity));
  if (start < 0) start = 0;
  slider.value = String(start);
  $("whatif-result").hidden = false;
  const chart = $("whatif-chart");
  if (chart._plot) {
    chart._plot.destroy();
    chart._plot = null;
  }
  showWhatIfPoint();
}

function showWhatIfPoint() {
  if (!whatif) return;
  const i = Number($("w-slider").value);
  const p = whatif.points[i];
  $("w-lambda").textContent = fmtNum(p.cost_sensitivity, 1);
  $("w-slider").setAttribute("aria-valuetext", `λ ${fmtNum(p.cost_sensitivity, 1)}`);
  $("w-point").textContent =
    `λ ${fmtNum(p.cost_sensitivity, 1)}: ${whatif.team} would have spent ${fmtUsd(p.spend_usd)} ` +
    `on ${p.requests} requests, mean score ${fmtNum(p.mean_score, 3)}`;
  P2LCharts.drawWhatIfChart($("whatif-chart"), whatif.points, i, fmtUsdAxis);
}

// ------------------------------------------------------------------ wiring

/** A form whose submit runs ``action`` with its button busy and errors shown in place. */
function onSubmit(formId, buttonId, errorId, action) {
  $(formId).addEventListener("submit", busy($(buttonId), async () => {
    showError(errorId, null);
    try {
      await action();
    } catch (exc) {
      guard(errorId)(exc);
    }
  }));
}

function busy(button, fn) {
  return async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try {
      await fn();
    } finally {
      button.disabled = false;
    }
  };
}

function wire() {
  $("signin-form").addEventListener("submit", busy($("signin-button"), async () => {
    $("signin-error").textContent = "";
    try {
      await signIn($("key").value.trim());
      $("main").focus({ preventScroll: true });
    } catch (exc) {
      state.key = null;
      $("signin-error").textContent =
        exc.status === 401 || exc.status === 403 ? `Sign-in refused: ${exc.message}` : exc.message;
    }
  }));
  $("signout").addEventListener("click", () => signOut("Signed out."));
  $("teams-refresh").addEventListener("click", refreshTeams);
  $("stats-since").addEventListener("change", () => refreshStats().catch(guard("stats-error")));
  $("decision-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    restartDecisions();
  });
  $("decision-find").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("f-decision").value.trim();
    if (id) openDecision(id);
  });
  $("live-toggle").addEventListener("click", (ev) => {
    state.live = !state.live;
    ev.currentTarget.setAttribute("aria-pressed", String(state.live));
    ev.currentTarget.textContent = `Live: ${state.live ? "on" : "off"}`;
  });
  $("decisions-more").addEventListener("click", loadOlder);
  onSubmit("preview-form", "preview-button", "preview-error", () => preview($("prompt").value));
  onSubmit("whatif-form", "whatif-run", "whatif-error", () => runWhatIf($("w-team").value));
  $("w-slider").addEventListener("input", showWhatIfPoint);
  $("dd-close").addEventListener("click", () => $("decision-dialog").close());
  $("decision-dialog").addEventListener("close", () => {
    const row = openedId && document.querySelector(`tr[data-decision-id="${CSS.escape(openedId)}"] button`);
    if (row) row.focus();
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(P2LCharts.resizeCharts, 150);
  });
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) {
    signIn(saved).catch((exc) => signOut(exc.status === 401 ? `Signed out: ${exc.message}` : exc.message));
  } else {
    $("key").focus();
  }
}

document.addEventListener("DOMContentLoaded", wire);
