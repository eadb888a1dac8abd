// raftlog web console: a client of the public API only (no server state).
// The token lives in sessionStorage (this tab only) and goes out as a bearer header.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "raftlog.token";
  const STATUS_MS = 1500, METRICS_MS = 2000, SAMPLES = 90, TIMEOUT_MS = 4000, TAIL_MAX = 200;
  let lastStatus = null, tail = null, tailFrom = 0;
  const samples = [];

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h.Authorization = "Bearer " + token();
    return h;
  }
  // fetch with a timeout; throws {unreachable} when the node does not answer,
  // {status, error} when it answers with an error.
  async function api(path, opts, timeoutMs) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs || TIMEOUT_MS);
    let resp;
    try {
      resp = await fetch(path, Object.assign({ cache: "no-store", signal: ctl.signal }, opts || {},
        { headers: headers((opts || {}).headers) }));
    } catch (e) {
      throw { unreachable: true, message: "node unreachable" };
    } finally { clearTimeout(timer); }
    const text = await resp.text();
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try { const e = JSON.parse(text).error; msg = resp.status + " " + e.code + ": " + e.message; } catch (_) {}
      throw { status: resp.status, message: msg };
    }
    return text;
  }
  const json = async (path, opts, t) => JSON.parse(await api(path, opts, t));

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function notice(msg) { const n = $("notice"); n.textContent = msg; n.classList.toggle("hidden", !msg); }
  function banner(msg) { const b = $("banner"); b.textContent = msg; b.classList.toggle("hidden", !msg); }

  // ---- members ----
  async function pollStatus() {
    try {
      const st = await json("/v1/status");
      lastStatus = st;
      banner("");
      renderMembers(st, true);
    } catch (e) {
      if (e.unreachable) {
        banner("node unreachable: this node does not answer; members shown as unreachable");
        if (lastStatus) renderMembers(lastStatus, false);
      } else {
        banner(e.status === 401 || e.status === 403 ? "not allowed: " + e.message + " (paste a token)" : e.message);
      }
    }
  }
  function renderMembers(st, nodeUp) {
    $("node-id").textContent = "· this node " + st.node_id + " (" + st.role + ")";
    $("summary").textContent = "leader " + (st.leader_id || "unknown") + " · term " + st.term +
      " · commit " + st.commit_index + " · offsets " + st.first_offset + "–" + st.next_offset;
    const tb = $("members").tBodies[0];
    tb.replaceChildren();
    const health = st.health || {};
    for (const m of st.members) {
      const self = m.node_id === st.node_id, leader = m.node_id === st.leader_id;
      const reachable = nodeUp && (self || m.reachable !== false);
      const tr = el("tr");
      tr.dataset.node = m.node_id;
      tr.dataset.reachable = String(reachable);
      if (leader) { tr.classList.add("leader"); tr.dataset.leader = "true"; }
      if (!reachable) tr.classList.add("unreachable");
      const role = leader ? "leader" : (self ? st.role : (m.voter ? "follower" : "learner"));
      const match = self ? st.last_log_index : m.match_index;
      const lag = match === null || match === undefined ? "–" : Math.max(0, st.last_log_index - match);
      const cells = [m.node_id + (self ? " (this)" : ""), role + (m.voter ? "" : " (non-voter)"),
        self || leader ? st.term : "–", match === null || match === undefined ? "–" : match, lag];
      for (const c of cells) tr.append(el("td", c));
      tr.append(el("td", reachable ? "yes" : "NO", reachable ? "ok" : "bad"));
      if (self && nodeUp) {
        const reasons = (health.reasons || []).join("; ");
        tr.append(el("td", (health.status || "–") + (reasons ? " (" + reasons + ")" : ""), health.status === "ok" ? "ok" : "bad"));
        const p99 = Number(health.fsync_p99_ms);
        tr.append(el("td", health.fsync_p99_ms === undefined || health.fsync_p99_ms === null || !Number.isFinite(p99) ? "–" : p99.toFixed(2) + " ms"));
      } else {
        tr.append(el("td", reachable ? "–" : "down", reachable ? "" : "bad"), el("td", "–"));
      }
      tr.append(el("td", m.http_addr));
      const admin = el("td");
      if (!leader) admin.append(button("make leader", () => transfer(m.node_id), "transfer-" + m.node_id));
      admin.append(button("remove", () => removeMember(m.node_id)));
      tr.append(admin);
      tb.append(tr);
    }
  }
  function button(label, fn, id) {
    const b = el("button", label);
    b.type = "button";
    if (id) b.id = id;
    b.addEventListener("click", fn);
    return b;
  }

  // ---- admin actions, each confirmed ----
  async function admin(question, path, opts, done) {
    if (!window.confirm(question)) return;
    try {
      const text = await api(path, Object.assign({ headers: { "Content-Type": "application/json" } }, opts), 15000);
      notice(done + (text ? ": " + text : ""));
    } catch (e) {
      let hint = "";
      if (e.status === 503 && lastStatus && lastStatus.leader_id && lastStatus.leader_id !== lastStatus.node_id) {
        const l = lastStatus.members.find((m) => m.node_id === lastStatus.leader_id);
        if (l) hint = " — admin actions run on the leader: open its console at " + l.http_addr + "/ui";
      }
      notice("failed: " + e.message + hint);
    }
    pollStatus();
  }
  const transfer = (to) => admin("Transfer leadership to " + to + "?", "/v1/cluster/transfer-leadership",
    { method: "POST", body: JSON.stringify({ to: to }) }, "leadership transfer to " + to + " requested");
  const removeMember = (id) => admin("Remove member " + id + " from the cluster?", "/v1/cluster/members/" + encodeURIComponent(id),
    { method: "DELETE" }, "removed " + id);
  $("add-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const spec = { node_id: $("add-id").value.trim(), grpc_addr: $("add-grpc").value.trim(),
      http_addr: $("add-http").value.trim(), voter: $("add-voter").checked };
    admin("Add member " + spec.node_id + " (" + (spec.voter ? "voter" : "non-voter") + ")?", "/v1/cluster/members",
      { method: "POST", body: JSON.stringify(spec) }, "added " + spec.node_id);
  });
  $("trim-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const before = Number($("trim-before").value);
    admin("Trim every message before offset " + before + "? This cannot be undone.", "/v1/log/trim",
      { method: "POST", body: JSON.stringify({ before_offset: before }) }, "trim requested");
  });

  // ---- rates from /metrics counters ----
  function counters(text) {
    let writes = 0, reads = 0;
    for (const line of text.split("\n")) {
      if (!line.startsWith("raftlog_http_requests_total{")) continue;
      const route = (line.match(/route="([^"]*)"/) || [])[1], method = (line.match(/method="([^"]*)"/) || [])[1];
      const v = Number(line.slice(line.lastIndexOf(" ") + 1));
      if (!Number.isFinite(v)) continue;
      if (method === "POST" && ["/v1/messages", "/v1/messages/batch", "/api/v1/append"].includes(route)) writes += v;
      if (method === "GET" && ["/v1/messages", "/api/v1/messages", "/v1/messages/stream"].includes(route)) reads += v;
    }
    return { writes: writes, reads: reads };
  }
  async function pollMetrics() {
    try {
      const c = counters(await api("/metrics"));
      samples.push({ t: performance.now() / 1000, w: c.writes, r: c.reads });
      if (samples.length > SAMPLES + 1) samples.shift();
      const rates = [];
      for (let i = 1; i < samples.length; i++) {
        const dt = samples[i].t - samples[i - 1].t;
        rates.push({ w: Math.max(0, samples[i].w - samples[i - 1].w) / dt, r: Math.max(0, samples[i].r - samples[i - 1].r) / dt });
      }
      spark("write-spark", "write-rate", rates.map((x) => x.w));
      spark("read-spark", "read-rate", rates.map((x) => x.r));
    } catch (e) { /* the status poll reports an unreachable node */ }
  }
  function spark(svgId, labelId, values) {
    const svg = $(svgId);
    svg.replaceChildren();
    if (!values.length) return;
    $(labelId).textContent = values[values.length - 1].toFixed(1) + " (max " + Math.max.apply(null, values).toFixed(1) + ")";
    const max = Math.max(1, Math.max.apply(null, values));
    const step = 180 / Math.max(1, SAMPLES - 1), x0 = 180 - (values.length - 1) * step;
    const pts = values.map((v, i) => (x0 + i * step).toFixed(1) + "," + (29 - (v / max) * 28).toFixed(1));
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }

  // ---- log pages ----
  async function showPage(from) {
    const limit = Math.max(1, Math.min(1000, Number($("limit").value) || 20));
    from = Math.max(0, Math.floor(from));
    $("from").value = from;
    try {
      const res = await json("/v1/messages?from=" + from + "&limit=" + limit);
      const tb = $("page").tBodies[0];
      tb.replaceChildren();
      for (const m of res.messages) { const tr = el("tr"); tr.append(el("td", m.offset), el("td", m.message)); tb.append(tr); }
      $("log-range").textContent = res.messages.length ? "offsets " + res.messages[0].offset + "–" + res.messages[res.messages.length - 1].offset
        + " (next " + res.next_offset + ")" : "nothing from " + from + " (next " + res.next_offset + ")";
      notice("");
    } catch (e) { notice("log: " + e.message); }
  }
  const limitNow = () => Math.max(1, Number($("limit").value) || 20);
  $("page-form").addEventListener("submit", (ev) => { ev.preventDefault(); showPage(Number($("from").value)); });
  $("prev").addEventListener("click", () => showPage(Number($("from").value) - limitNow()));
  $("next").addEventListener("click", () => showPage(Number($("from").value) + limitNow()));
  $("latest").addEventListener("click", () => showPage(((lastStatus && lastStatus.next_offset) || 0) - limitNow()));

  // ---- live tail: SSE without a token (EventSource sends no headers), long polls with one ----
  function tailAdd(m) {
    const li = el("li", m.offset + "  " + m.message);
    li.dataset.offset = m.offset;
    const list = $("tail");
    list.append(li);
    while (list.children.length > TAIL_MAX) list.firstChild.remove();
    list.scrollTop = list.scrollHeight;
    tailFrom = m.offset + 1;
  }
  function tailState(s) { $("tail-state").textContent = s; }
  function startTail() {
    stopTail();
    const mine = { stopped: false };
    tail = mine;
    $("tail-toggle").textContent = "stop tail";
    if (!token()) {
      const es = new EventSource("/v1/messages/stream?from=" + tailFrom);
      mine.es = es;
      es.onopen = () => tailState("live (stream) from " + tailFrom);
      es.onmessage = (ev) => { try { tailAdd(JSON.parse(ev.data)); } catch (_) {} };
      // A final `end` event says why the server closed; EventSource then reconnects
      // with Last-Event-ID, so nothing is skipped.
      es.addEventListener("end", (ev) => tailState("stream ended: " + ev.data + " (reconnecting)"));
      es.onerror = () => tailState("stream interrupted, reconnecting…");
    } else {
      (async function loop() {
        let backoff = 250;
        tailState("live (long poll) from " + tailFrom);
        while (!mine.stopped) {
          try {
            const res = await json("/v1/messages?from=" + tailFrom + "&limit=100&wait_ms=10000", {}, 15000);
            if (mine.stopped) break;
            res.messages.forEach(tailAdd);
            tailState("live (long poll) at " + tailFrom);
            backoff = 250;
          } catch (e) {
            tailState("tail: " + e.message + ", retrying");
            await new Promise((r) => setTimeout(r, backoff));
            backoff = Math.min(5000, backoff * 2);
          }
        }
      })();
    }
  }
  function stopTail() {
    if (tail) { tail.stopped = true; if (tail.es) tail.es.close(); }
    tail = null;
    $("tail-toggle").textContent = "start tail";
    tailState("stopped");
  }
  $("tail-toggle").addEventListener("click", () => (tail ? stopTail() : startTail()));

  // ---- token ----
  function tokenState() { $("token-state").textContent = token() ? "token set (this tab)" : "no token"; }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    tokenState();
    if (tail) startTail();
    pollStatus();
  });
  $("token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); tokenState(); if (tail) startTail(); });

  // ---- start ----
  tokenState();
  (async function init() {
    await pollStatus();
    tailFrom = Math.max(0, ((lastStatus && lastStatus.next_offset) || 0) - 10);
    startTail();
    showPage(Math.max(0, tailFrom - 10));
  })();
  setInterval(pollStatus, STATUS_MS);
  setInterval(pollMetrics, METRICS_MS);
  pollMetrics();
})();
