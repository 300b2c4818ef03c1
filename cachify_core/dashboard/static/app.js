// cachify dashboard: renders the server-sent snapshots. Every key, holder and name comes from
// the store (task arguments: untrusted), so the DOM is built with createElement/textContent
// only; no innerHTML, no string-built markup.
"use strict";
(() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).getAttribute("content");
  const NONCE = meta("cachify-nonce");
  const WRITES = meta("cachify-writes") === "on";
  const SVG = "http://www.w3.org/2000/svg";
  const ARM_MS = 6000;

  const $ = (id) => document.getElementById(id);
  const armed = new Map(); // action id -> {step, until}
  let latest = null;
  let pointerDown = false;
  let source = null;

  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.cls) node.className = opts.cls;
      if (opts.title) node.title = opts.title;
      for (const [k, v] of Object.entries(opts.data || {})) node.dataset[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "no expiry";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  }

  function say(text, bad) {
    const status = $("status");
    status.textContent = text;
    status.className = bad ? "status bad" : "status";
  }

  async function post(path, body) {
    try {
      const r = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Cachify-Nonce": NONCE },
        body: JSON.stringify(body),
      });
      const data = await r.json().catch(() => ({ error: r.statusText }));
      return r.ok ? data : { error: data.error || `HTTP ${r.status}` };
    } catch (e) {
      return { error: String(e) };
    }
  }

  // A button that fires after len(labels) clicks; each earlier click arms it for ARM_MS.
  function action(id, labels, cls, fire) {
    const state = armed.get(id);
    const step = state && state.until > Date.now() ? state.step : 0;
    const b = el("button", { cls: cls + (step ? " armed" : ""), data: { action: labels[0] } }, labels[step]);
    b.type = "button";
    b.addEventListener("click", () => {
      // the state at click time: this button may be older than the last render
      const now = armed.get(id);
      const next = (now && now.until > Date.now() ? now.step : 0) + 1;
      if (next >= labels.length) {
        armed.delete(id);
        b.disabled = true;
        fire();
      } else {
        armed.set(id, { step: next, until: Date.now() + ARM_MS });
        b.textContent = labels[next];
        b.classList.add("armed");
      }
    });
    return b;
  }

  async function release(body, what) {
    const res = await post("/api/release", body);
    if (res.error) say(`${what}: ${res.error}`, true);
    else if (res.released) say(`released ${what}`);
    else say(`not released: ${what} is no longer held by the holder shown (refresh and look again)`, true);
  }

  // Slots in use (solid) and entries waiting (dashed) over the history kept by the server;
  // the x axis spans the samples there are (at least 10 s), up to the server's window.
  function sparkline(history, windowS, max) {
    const w = 160, h = 28;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", String(w));
    svg.setAttribute("height", String(h));
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const span = Math.min(windowS, Math.max(10, ...history.map((p) => -p[0])));
    const top = Math.max(max || 0, 1, ...history.map((p) => Math.max(p[1], p[2])));
    for (const [index, cls] of [[2, "waiting"], [1, "used"]]) {
      const pts = history.map((p) => {
        const x = Math.max(0, Math.min(w, ((span + p[0]) / span) * w));
        const y = h - 2 - (p[index] / top) * (h - 4);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
      if (pts.length === 1) pts.unshift(`${Math.max(0, parseFloat(pts[0]) - 2)},${pts[0].split(",")[1]}`);
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", cls);
      line.setAttribute("points", pts.join(" "));
      svg.append(line);
    }
    const title = document.createElementNS(SVG, "title");
    title.textContent = `slots in use (solid) and waiting (dashed), last ${Math.round(span)} s; top ${top}`;
    svg.append(title);
    return svg;
  }

  function poolCard(p, windowS) {
    const max = p.max_size;
    const fill = el("div");
    const pct = max ? Math.min(100, (100 * p.in_use) / max) : p.in_use ? 100 : 0;
    fill.style.width = `${pct}%`;
    const bar = el("div", { cls: "bar" + (max && p.in_use >= max ? " full" : "") }, fill);
    const room = p.room;
    const parked = room ? room.parked : 0;
    const card = el(
      "div",
      { cls: "pool", data: { key: p.key } },
      el("div", { cls: "title" }, p.key, " ", el("span", { cls: "muted" }, p.node)),
      el(
        "div",
        { cls: "row" },
        bar,
        el("span", { cls: "occupancy" }, `${p.in_use}/${max === null ? "?" : max}`),
        el("span", null, "waiting ", el("b", { cls: "parked" }, String(parked))),
        el("span", { cls: "oldest muted" }, room && room.parked ? `oldest ${room.oldest_wait_s.toFixed(1)} s` : ""),
        room && room.handed ? el("span", { cls: "muted" }, `${room.handed} handed over`) : null,
        room && room.timed ? el("span", { cls: "muted" }, `${room.timed} timed`) : null,
        p.expired ? el("span", { cls: "muted" }, `${p.expired} expired`) : null,
        sparkline(p.history, windowS, max),
      ),
    );
    if (max === null) card.append(el("div", { cls: "muted" }, "size not stored (only a waiting room stores it)"));
    else if (p.max_size_remembered) card.append(el("div", { cls: "muted" }, "size as its waiting room last stored it"));
    const body = el("tbody");
    for (const s of p.slots) {
      const cells = [
        el("td", { cls: "holder" }, s.holder, s.reserved ? el("span", { cls: "muted" }, " (reserved for a hand-over)") : null),
        el("td", { cls: "num" }, duration(s.lease_ms)),
      ];
      const actions = el("td", { cls: "actions" });
      if (WRITES && !s.reserved) {
        actions.append(
          action(`slot|${p.key}|${s.holder}`, ["release", "confirm release?"], "", () =>
            release({ key: p.key, holder: s.holder }, `slot of ${s.holder} in ${p.key}`),
          ),
        );
      }
      body.append(el("tr", { cls: "slot", data: { holder: s.holder } }, ...cells, actions));
    }
    const head = el("thead", null, el("tr", null, el("th", null, "slot holder"), el("th", { cls: "num" }, "lease left"), el("th", { cls: "actions" })));
    if (p.slots.length) card.append(el("table", null, head, body));
    return card;
  }

  function renderPools(snap) {
    $("pools-count").textContent = `(${snap.pools.length})`;
    const cards = snap.pools.map((p) => poolCard(p, snap.history_s));
    $("pools").replaceChildren(...(cards.length ? cards : [el("p", { cls: "muted" }, "no pools in use")]));
  }

  function renderHolds(snap) {
    const shown = snap.holds.length;
    $("holds-count").textContent =
      snap.pattern === "*" ? `(${snap.holds_total})` : `(${snap.holds_matching} of ${snap.holds_total} match)`;
    const rows = snap.holds.map((h) => {
      const actions = el("td", { cls: "actions" });
      if (WRITES) {
        actions.append(
          action(`hold|${h.key}|${h.holder}`, ["release", "confirm release?"], "", () =>
            release({ key: h.key, holder: h.holder }, `${h.kind} ${h.key}`),
          ),
          action(`force|${h.key}`, ["force…", "release whoever holds it?", "really force? (2nd confirm)"], "force", () =>
            release({ key: h.key, force: true, confirm: h.key }, `${h.kind} ${h.key} (forced)`),
          ),
        );
      }
      return el(
        "tr",
        { cls: "hold", data: { key: h.key } },
        el("td", { cls: "key" }, h.key),
        el("td", null, h.kind),
        el("td", { cls: "holder" }, h.holder),
        el("td", { cls: "num" }, duration(h.ttl_ms)),
        el("td", null, h.waiters ? "yes" : ""),
        actions,
      );
    });
    if (snap.holds_matching > shown) rows.push(el("tr", null, el("td", { cls: "muted" }, `… ${snap.holds_matching - shown} more: narrow the filter`)));
    $("holds").tBodies[0].replaceChildren(...rows);
  }

  function renderLimits(snap) {
    $("limits-count").textContent = `(${snap.limits.length})`;
    $("limits").tBodies[0].replaceChildren(
      ...snap.limits.map((l) =>
        el(
          "tr",
          { cls: "limit", data: { key: l.key } },
          el("td", { cls: "key" }, l.key),
          el("td", null, l.rate),
          el("td", { cls: "num" }, `${l.remaining}/${l.burst}${l.burst_assumed ? "*" : ""}`),
          el("td", { cls: "num" }, l.next_allowed_ms ? duration(l.next_allowed_ms) : "now"),
          el("td", { cls: "num" }, duration(l.backlog_us / 1000)),
        ),
      ),
    );
    $("limits-note").hidden = !snap.limits.some((l) => l.burst_assumed);
  }

  function hitRate(c, mode) {
    if (mode === "off") return "metrics off";
    if (mode === "otel") return "metrics on (OpenTelemetry): see its exporter";
    if (c.hit_rate === null) return "no lookups yet";
    return `${(100 * c.hit_rate).toFixed(1)}% (${c.hits} hits / ${c.misses} misses)`;
  }

  function renderCaches(snap) {
    $("caches-count").textContent = `(${snap.caches.length})`;
    $("caches").tBodies[0].replaceChildren(
      ...snap.caches.map((c) => {
        const actions = el("td", { cls: "actions" });
        if (WRITES) {
          actions.append(
            action(`clear|${c.namespace}`, ["clear", "clear every entry?"], "", async () => {
              const res = await post("/api/cache/clear", { namespace: c.namespace });
              if (res.error) say(`clear ${c.namespace}: ${res.error}`, true);
              else say(`cleared ${res.namespace}: generation is now ${res.generation}`);
            }),
          );
        }
        return el(
          "tr",
          { cls: "cache", data: { namespace: c.namespace } },
          el("td", { cls: "key" }, c.namespace),
          el("td", { cls: "num" }, String(c.generation)),
          el("td", { cls: "num entries" }, String(c.entries)),
          el("td", { cls: "num" }, String(c.stale)),
          el("td", { cls: "hitrate" }, hitRate(c, snap.metrics)),
          actions,
        );
      }),
    );
  }

  function render() {
    if (!latest) return;
    if (pointerDown) {
      setTimeout(render, 100);
      return;
    }
    const snap = latest;
    $("server").textContent = `${snap.server} · prefix ${JSON.stringify(snap.prefix)}`;
    $("updated").textContent = `updated ${new Date(snap.time_s * 1000).toLocaleTimeString()} · read ${snap.read_ms} ms`;
    const error = $("error");
    error.hidden = !snap.error;
    error.textContent = snap.error ? `the store failed: ${snap.error}` : "";
    renderPools(snap);
    renderHolds(snap);
    renderLimits(snap);
    renderCaches(snap);
  }

  function connect() {
    if (source) source.close();
    const pattern = $("holds-pattern").value.trim() || "*";
    source = new EventSource(`/api/events?pattern=${encodeURIComponent(pattern)}`);
    source.onopen = () => {
      $("conn").textContent = "live";
      $("conn").className = "badge live";
    };
    source.onerror = () => {
      $("conn").textContent = "reconnecting…";
      $("conn").className = "badge down";
    };
    source.onmessage = (ev) => {
      latest = JSON.parse(ev.data);
      render();
    };
  }

  document.addEventListener("pointerdown", (e) => {
    if (e.target instanceof HTMLButtonElement) pointerDown = true;
  });
  document.addEventListener("pointerup", () => setTimeout(() => (pointerDown = false), 0));
  document.addEventListener("pointercancel", () => (pointerDown = false));
  $("writes").textContent = WRITES ? "writes on" : "read-only";
  $("writes").className = WRITES ? "badge on" : "badge";
  let typing = null;
  $("holds-pattern").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(connect, 300);
  });
  connect();
})();
