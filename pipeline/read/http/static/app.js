// The live chart page of `pipeline serve`: candlesticks with volume and VWAP, and the latest ticks of one
// symbol, from the read API. A server-sent event stream (/api/events/SYMBOL, read with fetch so that a bearer
// token can be sent) says when ticks are stored; the page then reloads the bars and ticks it shows.
// `window.tickpipe` exposes what is drawn (bars, ticks, renders, events) for tests and for the curious.
"use strict";

(() => {
  const BARS_SHOWN = 120;
  const TICKS_SHOWN = 20;
  const INTERVAL_MS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3, "1d": 86400e3 };
  const $ = (id) => document.getElementById(id);
  const state = {
    symbol: null, interval: "1m", bars: [], ticks: [], stored: null, renders: 0, events: 0, live: false,
  };
  window.tickpipe = state;
  let token = sessionStorage.getItem("tickpipe-token") || "";
  let stream = null; // AbortController of the open event stream
  let refreshing = null; // the refresh in flight
  let again = false; // another refresh was asked for meanwhile

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  function headers() { return token ? { Authorization: "Bearer " + token } : {}; }

  async function api(path) {
    const response = await fetch(path, { headers: headers() });
    if (response.status === 401) { askToken(); throw new ApiError("this service needs a token", 401); }
    const body = await response.json().catch(() => ({ message: response.statusText }));
    if (!response.ok) throw new ApiError(body.message || response.statusText, response.status);
    return body;
  }

  function say(text) {
    const box = $("message");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function askToken() {
    $("token-form").hidden = false;
    $("token").focus();
  }

  function setLive(kind, text) {
    const badge = $("live");
    badge.className = "badge " + kind;
    badge.textContent = text;
    state.live = kind === "live";
  }

  function fmtTime(iso) { return iso.replace("T", " ").replace("Z", "").slice(0, 23); }

  function fmtPrice(p) {
    return Math.abs(p * 100 - Math.round(p * 100)) < 1e-6 ? p.toFixed(2) : String(p);
  }

  function draw() {
    const bars = state.bars;
    const x = bars.map((b) => b.start);
    const up = bars.map((b) => b.close >= b.open);
    const text = bars.map((b) => `trades ${b.trades}<br>volume ${b.volume}<br>VWAP ${b.vwap === null ? "-" : b.vwap.toFixed(4)}`);
    const traces = [
      {
        type: "candlestick", name: state.symbol, x, open: bars.map((b) => b.open), high: bars.map((b) => b.high),
        low: bars.map((b) => b.low), close: bars.map((b) => b.close), text, hoverinfo: "x+text+y",
        increasing: { line: { color: "#26a69a" } }, decreasing: { line: { color: "#ef5350" } },
      },
      {
        type: "scatter", mode: "lines", name: "VWAP", x, y: bars.map((b) => b.vwap),
        line: { color: "#5c6bc0", width: 1, dash: "dot" }, hoverinfo: "skip",
      },
      {
        type: "bar", name: "volume", x, y: bars.map((b) => b.volume), yaxis: "y2",
        marker: { color: up.map((u) => (u ? "rgba(38,166,154,0.55)" : "rgba(239,83,80,0.55)")) },
        hovertemplate: "volume %{y}<extra></extra>",
      },
    ];
    const layout = {
      margin: { l: 60, r: 20, t: 10, b: 40 }, showlegend: false, dragmode: "pan",
      xaxis: { type: "date", rangeslider: { visible: false } },
      yaxis: { domain: [0.3, 1], title: { text: "price" }, automargin: true },
      yaxis2: { domain: [0, 0.22], title: { text: "volume" }, automargin: true },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff", uirevision: state.symbol + state.interval,
    };
    Plotly.react($("chart"), traces, layout, { displaylogo: false, responsive: true });
    state.renders += 1;
    $("chart").dataset.bars = String(bars.length);
    $("chart-title").textContent = bars.length
      ? `${state.symbol} · ${state.interval} bars · ${bars.length} bars · last bar ${fmtTime(bars[bars.length - 1].start).slice(0, 16)} UTC`
      : `${state.symbol} · no ticks stored`;
  }

  function renderTicks() {
    const rows = state.ticks.map((t, i) => {
      const older = state.ticks[i + 1];
      const cls = older ? (t.price >= older.price ? "up" : "down") : "";
      return `<tr data-offset="${t.offset}"><td>${fmtTime(t.ts)}</td><td class="${cls}">${fmtPrice(t.price)}</td>` +
        `<td>${t.volume}</td><td>${t.partition}</td><td>${t.offset}</td></tr>`;
    });
    $("ticks").tBodies[0].innerHTML = rows.join("");
  }

  async function load() {
    const symbol = encodeURIComponent(state.symbol);
    const page = await api(`/api/ticks/${symbol}?order=newest_first&limit=${TICKS_SHOWN}`);
    state.ticks = page.ticks;
    state.bars = [];
    if (page.ticks.length) {
      const step = INTERVAL_MS[state.interval];
      const newest = Date.parse(page.ticks[0].ts);
      const from = new Date(Math.floor(newest / step - BARS_SHOWN + 1) * step).toISOString();
      const bars = await api(`/api/ohlc/${symbol}?interval=${state.interval}&from=${from}`);
      state.bars = bars.bars;
    }
    draw();
    renderTicks();
    $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    document.body.dataset.state = "ready";
  }

  // One refresh at a time; a request arriving meanwhile runs once more afterwards.
  async function refresh() {
    if (refreshing) { again = true; return refreshing; }
    refreshing = (async () => {
      do {
        again = false;
        try { await load(); say(""); } catch (e) { say(e.message); }
      } while (again);
    })();
    try { await refreshing; } finally { refreshing = null; }
  }

  async function listen(symbol) {
    if (stream) stream.abort();
    const control = (stream = new AbortController());
    try {
      const response = await fetch(`/api/events/${encodeURIComponent(symbol)}`, { headers: headers(), signal: control.signal });
      if (!response.ok) throw new ApiError(response.statusText, response.status);
      setLive("live", "live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      if (control.signal.aborted) return;
    }
    if (control.signal.aborted) return;
    setLive("down", "reconnecting");
    setTimeout(() => { if (stream === control) listen(symbol); }, 2000);
  }

  function onMessage(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trim());
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (event === "unavailable") { setLive("down", "MongoDB unavailable"); say(payload.message); return; }
    if (event !== "ticks" || payload.symbol !== state.symbol) return;
    state.events += 1;
    const changed = state.stored !== null && payload.stored !== state.stored;
    state.stored = payload.stored;
    if (changed) refresh();
  }

  function choose(symbol, interval) {
    state.symbol = symbol;
    state.interval = interval;
    state.stored = null;
    $("symbol").value = symbol;
    $("interval").value = interval;
    const url = new URL(location.href);
    url.searchParams.set("symbol", symbol);
    url.searchParams.set("interval", interval);
    history.replaceState(null, "", url);
    refresh();
    listen(symbol);
  }

  async function start() {
    try {
      const { symbols } = await api("/api/symbols");
      const select = $("symbol");
      select.innerHTML = symbols.map((s) => `<option value="${s}">${s}</option>`).join("");
      if (!symbols.length) {
        document.body.dataset.state = "empty";
        say("No ticks stored yet: run the worker (pipeline run), then reload.");
        return;
      }
      const asked = new URL(location.href).searchParams;
      const symbol = symbols.includes((asked.get("symbol") || "").toUpperCase()) ? asked.get("symbol").toUpperCase() : symbols[0];
      const interval = INTERVAL_MS[asked.get("interval")] ? asked.get("interval") : "1m";
      choose(symbol, interval);
    } catch (e) {
      document.body.dataset.state = "error";
      setLive("down", "offline");
      say(e.message);
    }
  }

  $("symbol").addEventListener("change", () => choose($("symbol").value, state.interval));
  $("interval").addEventListener("change", () => choose(state.symbol, $("interval").value));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("tickpipe-token", token);
    $("token-form").hidden = true;
    start();
  });
  start();
})();
