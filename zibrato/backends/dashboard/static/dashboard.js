/* Zibrato dashboard: polls /api/status and redraws everything after each new flush.
 *
 * Polling rather than server-sent events: one short request every second or two costs
 * nothing at this scale, holds no server thread open, survives a restart of the backend
 * without reconnection logic, and the page is up to date within a second of a flush.
 *
 * Everything a peer controls (route names, metric names, tag values, sources) reaches the
 * page through textContent or an option's text, never as HTML.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const COLORS = {
    requests: "#818cf8",
    errors: "#f87171",
    p50: "#34d399",
    p95: "#fbbf24",
    p99: "#f87171",
    view: "#38bdf8",
    queries: "#a78bfa",
    queriesMean: "#818cf8",
    duplicates: "#fb923c",
    // Where the time goes, bottom of the stack first (docs/web-metrics.md).
    components: [["db", "#a78bfa"], ["http.client", "#38bdf8"], ["cache", "#34d399"],
                 ["template", "#fbbf24"], ["app", "#8b97b0"]],
    palette: ["#818cf8", "#34d399", "#fbbf24", "#f87171", "#38bdf8", "#a78bfa",
              "#fb923c", "#f472b6", "#2dd4bf", "#a3e635", "#e879f9", "#facc15"],
  };
  const AXIS = { stroke: "#8b97b0", grid: { stroke: "rgba(139,151,176,0.12)", width: 1 },
                 ticks: { stroke: "rgba(139,151,176,0.25)", width: 1 } };
  const DURATION_STATS = new Set(["p50", "p90", "p95", "p99", "mean", "min", "max"]);

  // Exposed for tests and the curious: what was drawn, and how often.
  const state = {
    ready: false, lastFlush: null, flushInterval: 10, route: null, metric: null,
    sort: { key: "p95", descending: true }, rows: [], metrics: [], charts: {},
    draws: {}, points: {}, refreshes: 0, failures: [], statements: [],
  };
  window.zibratoDashboard = state;

  // -- fetching -------------------------------------------------------------------------
  async function getJson(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (Array.isArray(value)) value.forEach((v) => url.searchParams.append(key, v));
      else if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  const chartWindow = () => Number($("window").value);
  const tableWindow = () => Number($("table-window").value);

  // -- formatting -----------------------------------------------------------------------
  function fmtMs(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const ms = seconds * 1000;
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    if (ms >= 100) return ms.toFixed(0) + " ms";
    if (ms >= 10) return ms.toFixed(1) + " ms";
    return ms.toFixed(2) + " ms";
  }
  function fmtNumber(value) {
    if (value === null || value === undefined) return "–";
    const size = Math.abs(value);
    if (size >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (size >= 1e4) return (value / 1e3).toFixed(1) + "k";
    if (size >= 100 || Number.isInteger(value)) return value.toFixed(0);
    if (size >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }
  function fmtPercent(ratio) {
    if (ratio === null || ratio === undefined) return "–";
    const pct = ratio * 100;
    if (pct === 0) return "0 %";
    return (pct < 1 ? pct.toFixed(2) : pct.toFixed(1)) + " %";
  }
  function fmtBytes(bytes) {
    if (bytes >= 1e9) return (bytes / 1e9).toFixed(2) + " GB";
    if (bytes >= 1e6) return (bytes / 1e6).toFixed(1) + " MB";
    return (bytes / 1e3).toFixed(0) + " kB";
  }
  const fmtTime = (ts) => new Date(ts * 1000).toLocaleTimeString();

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- charts ---------------------------------------------------------------------------
  // Time ticks on one line (uPlot's second line of dates overlapped its neighbours):
  // seconds only when ticks are closer than a minute, the date where a day starts.
  function timeTicks(u, splits, axis, space, incr) {
    const clock = incr < 60 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
      : { hour: "2-digit", minute: "2-digit" };
    let day = null;
    return splits.map((ts) => {
      const when = new Date(ts * 1000);
      const date = when.toLocaleDateString([], { month: "short", day: "numeric" });
      const newDay = date !== day && (day !== null || incr >= 3600);
      day = date;
      if (incr >= 86400) return date;
      const time = when.toLocaleTimeString([], clock);
      return newDay ? date + " " + time : time;
    });
  }

  // A stretch without flushes (the backend was stopped) breaks every line instead of
  // drawing a slope across it: a null point is put in the middle of each such gap.
  function breakGaps(data) {
    const t = data[0];
    if (t.length < 3) return data;
    const steps = t.slice(1).map((ts, i) => ts - t[i]).sort((a, b) => a - b);
    const usual = steps[Math.floor(steps.length / 2)];
    const gap = (i) => i > 0 && t[i] - t[i - 1] > 3 * usual;
    if (!t.some((ts, i) => gap(i))) return data;
    return data.map((values, n) => values.flatMap((v, i) => {
      if (!gap(i)) return [v];
      return [n === 0 ? (t[i - 1] + t[i]) / 2 : null, v];
    }));
  }

  // ``stacked``: each line's values are cumulative (the lines stacked bottom-up, given
  // top-first so that each fill is painted over the one above it); the legend shows each
  // line's own share, its value less the next line's.
  function draw(key, t, lines, format, stacked) {
    const target = $("chart-" + key);
    const data = breakGaps([t, ...lines.map((line) => line.values)]);
    const labels = lines.map((line) => line.label).join("\u0000");
    const existing = state.charts[key];
    state.points[key] = lines.map((line) => line.values.filter((v) => v !== null).length);
    state.draws[key] = (state.draws[key] || 0) + 1;
    if (existing && existing.zibratoLabels === labels) {
      existing.setData(data);
      showLatest(existing);
      return;
    }
    if (existing) existing.destroy();
    const width = Math.max(target.clientWidth, 240);
    const options = {
      width: width,
      height: target.classList.contains("wide") ? 240 : 210,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      legend: { live: true },
      // The first legend is set after the constructor returns: show the newest values then.
      hooks: { ready: [showLatest] },
      axes: [
        Object.assign({}, AXIS, { space: 70, values: timeTicks }),
        Object.assign({}, AXIS, { size: 56, values: (u, values) => tickLabels(values, format === msAxis) }),
      ],
      series: [
        {},
        ...lines.map((line) => ({
          label: line.label,
          stroke: line.color,
          width: line.width || 1.6,
          dash: line.dash,
          fill: line.fill,
          value: (u, v, si, idx) => {
            if (v === null || v === undefined) return "–";
            if (!stacked || idx === null) return format(v);
            const below = si + 1 < u.data.length ? u.data[si + 1][idx] : 0;
            return format(v - (below || 0));
          },
        })),
      ],
    };
    const chart = new uPlot(options, data, target);
    chart.zibratoLabels = labels;
    state.charts[key] = chart;
    showLatest(chart);
  }

  // Until the pointer is over a chart, its legend shows the newest values.
  function showLatest(chart) {
    const count = chart.data[0].length;
    if (count && chart.cursor.left < 0) chart.setLegend({ idx: count - 1 });
  }

  function resizeCharts() {
    for (const [key, chart] of Object.entries(state.charts)) {
      const target = $("chart-" + key);
      chart.setSize({ width: Math.max(target.clientWidth, 240), height: chart.height });
    }
  }

  const msAxis = (v) => (v === null ? "" : fmtMs(v).replace(" ms", "").replace(" s", "s"));

  // An axis reads in one unit, with the decimals its step needs ("0", "0.5s", "1.0s"; not
  // "0.00", "500", "1.00s"): durations in ms, or in s once a tick reaches a second.
  function tickLabels(values, durations) {
    const ticks = values.filter((v) => v !== null && v !== undefined);
    const inSeconds = durations && Math.max(0, ...ticks.map(Math.abs)) >= 1;
    const scale = durations && !inSeconds ? 1000 : 1;
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) * scale : 1;
    let decimals = 0;
    while (decimals < 3 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-6) {
      decimals += 1;
    }
    return values.map((v) => {
      if (v === null || v === undefined) return "";
      if (!durations && Math.abs(v) >= 1e4) return fmtNumber(v);
      return (v * scale).toFixed(decimals) + (inSeconds ? "s" : "");
    });
  }

  // -- the route table ------------------------------------------------------------------
  function flatten(route) {
    const pick = (group, key) => (route[group] ? route[group][key] : null);
    return {
      route: route.route,
      requests: route.requests,
      rate: route.rate,
      errors: route.errors,
      error_ratio: route.error_ratio,
      p50: pick("latency", "p50"),
      p95: pick("latency", "p95"),
      p99: pick("latency", "p99"),
      view_p95: pick("view", "p95"),
      queries_p95: pick("queries", "p95"),
      duplicates_mean: pick("duplicates", "mean"),
      dominant_share: route.dominant ? route.dominant.share : null,
      dominant_component: route.dominant ? route.dominant.component : null,
    };
  }

  function compareRows(a, b) {
    const { key, descending } = state.sort;
    const x = a[key], y = b[key];
    if (x === y) return a.route < b.route ? -1 : 1;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return descending ? -order : order;
  }

  function heat(value, max) {
    if (value === null || !max || max < 0.01) return "";
    const share = value / max;
    return share >= 0.75 ? "heat-3" : share >= 0.4 ? "heat-2" : share >= 0.2 ? "heat-1" : "";
  }

  function numberCell(text, value, max, className) {
    const td = element("td", className || "");
    const cell = element("span", "cell");
    if (max && value) {
      const bar = element("span", "bar");
      bar.style.width = Math.min(100, (100 * value) / max).toFixed(1) + "%";
      cell.append(bar);
    }
    cell.append(element("span", "num", text));
    td.append(cell);
    return td;
  }

  // "78 % http.client": the component that took the largest share of the route's time.
  function shareCell(row) {
    const td = element("td", "text share");
    if (row.dominant_component === null) {
      td.classList.add("muted");
      td.textContent = "–";
      return td;
    }
    td.classList.add(row.dominant_component.replace(".", "-"));
    td.append(element("span", "num", fmtPercent(row.dominant_share)),
              element("span", "component", row.dominant_component));
    return td;
  }

  function renderTable() {
    const rows = state.rows.slice().sort(compareRows);
    const max = (key) => Math.max(0, ...rows.map((r) => r[key] || 0));
    const many = rows.length > 1;
    const top = { rate: max("rate"), p95: max("p95"), p99: max("p99"), queries: max("queries_p95") };
    const slowest = many ? rows.reduce((a, b) => ((b.p95 || 0) > (a.p95 || 0) ? b : a)) : null;
    const body = $("routes").tBodies[0];
    body.replaceChildren(...rows.map((row) => {
      const tr = element("tr");
      tr.dataset.route = row.route;
      if (row.route === state.route) tr.classList.add("selected");
      const name = element("td", "text route", row.route);
      name.title = row.route;
      if (row.duplicates_mean >= 1) name.append(element("span", "badge n1", "N+1"));
      if (slowest && row === slowest && top.p95 >= 0.01) name.append(element("span", "badge slow", "slowest"));
      tr.append(
        name,
        numberCell(fmtNumber(row.rate), row.rate, top.rate),
        numberCell(fmtPercent(row.error_ratio), null, 0,
                   row.error_ratio > 0.01 ? "heat-3" : row.error_ratio > 0 ? "heat-1" : "muted"),
        numberCell(fmtMs(row.p50), null, 0),
        numberCell(fmtMs(row.p95), row.p95, top.p95, many ? heat(row.p95, top.p95) : ""),
        numberCell(fmtMs(row.p99), null, 0, many ? heat(row.p99, top.p99) : ""),
        numberCell(fmtMs(row.view_p95), null, 0, row.view_p95 === null ? "muted" : ""),
        numberCell(fmtNumber(row.queries_p95), row.queries_p95, top.queries,
                   many ? heat(row.queries_p95, top.queries) : ""),
        numberCell(fmtNumber(row.duplicates_mean), null, 0,
                   row.duplicates_mean >= 1 ? "heat-2" : row.duplicates_mean === null ? "muted" : ""),
        shareCell(row),
      );
      return tr;
    }));
    $("routes-empty").hidden = rows.length > 0;
    for (const th of $("routes").tHead.rows[0].cells) {
      th.classList.toggle("sorted", th.dataset.key === state.sort.key);
      th.classList.toggle("ascending", th.dataset.key === state.sort.key && !state.sort.descending);
    }
  }

  async function loadTable() {
    const answer = await getJson("/api/routes", { window: tableWindow() });
    state.rows = answer.routes.map(flatten);
    const names = state.rows.map((r) => r.route);
    if (state.route === null || !names.includes(state.route)) {
      const ordered = state.rows.slice().sort(compareRows);
      if (state.route === null && ordered.length) state.route = ordered[0].route;
    }
    const select = $("route-select");
    const known = new Set(Array.from(select.options, (o) => o.value));
    for (const name of names.slice().sort()) {
      if (!known.has(name)) select.add(new Option(name, name));
    }
    if (state.route !== null) select.value = state.route;
    renderTable();
  }

  // -- route charts ---------------------------------------------------------------------
  async function loadRoute() {
    if (state.route === null) return;
    const answer = await getJson("/api/route", { route: state.route, window: chartWindow() });
    const l = answer.lines;
    draw("rate", answer.t, [
      { label: "requests/s", values: l["latency.rate"], color: COLORS.requests, fill: "rgba(129,140,248,0.16)" },
      { label: "errors/s", values: l["errors.rate"], color: COLORS.errors },
    ], fmtNumber);
    draw("latency", answer.t, [
      { label: "p50", values: l["latency.p50"], color: COLORS.p50 },
      { label: "p95", values: l["latency.p95"], color: COLORS.p95 },
      { label: "p99", values: l["latency.p99"], color: COLORS.p99 },
      { label: "view p95", values: l["view.p95"], color: COLORS.view, dash: [6, 4] },
    ], msAxis);
    draw("queries", answer.t, [
      { label: "queries p95", values: l["queries.p95"], color: COLORS.queries, fill: "rgba(167,139,250,0.14)" },
      { label: "queries mean", values: l["queries.mean"], color: COLORS.queriesMean, dash: [6, 4] },
      { label: "duplicates mean", values: l["duplicates.mean"], color: COLORS.duplicates },
    ], fmtNumber);
    draw("breakdown", answer.t, stackedLines(l), msAxis, true);
    await loadStatements();
  }

  // The breakdown's lines, cumulative bottom-up and given top-first (see draw()).
  function stackedLines(lines) {
    const running = [];
    const stacked = COLORS.components.map(([name, color]) => {
      const own = lines["breakdown." + name] || [];
      own.forEach((v, i) => {
        running[i] = v === null || v === undefined ? (running[i] ?? null) : (running[i] || 0) + v;
      });
      return { label: name, values: running.slice(), color: color, fill: color + "55", width: 1 };
    });
    return stacked.reverse();
  }

  // -- repeated statements --------------------------------------------------------------
  function statementRow(row) {
    const tr = element("tr");
    const sql = element("td", "text sql", row.statement || "");
    sql.title = row.statement || "";
    const where = element("td", "text where");
    if (row.code) {
      where.append(element("span", "file", row.code.file + ":" + row.code.line),
                   element("span", "function", " in " + row.code.function));
    } else {
      where.append(element("span", "function", "past the statements kept per route"));
    }
    if (row.template) {
      where.append(element("span", "template", "template " + row.template.name + ":" + row.template.line));
    }
    const repeats = row.repeats || {};
    tr.append(
      sql,
      element("td", "", fmtNumber(repeats.mean) + " (" + fmtNumber(repeats.max) + ")"),
      element("td", "", fmtNumber(row.requests)),
      where,
      element("td", "", fmtTime(row.last_seen)),
    );
    return tr;
  }

  async function loadStatements() {
    if (state.route === null) return;
    const answer = await getJson("/api/statements", { route: state.route, window: tableWindow() });
    state.statements = answer.statements;
    $("statements").tBodies[0].replaceChildren(...answer.statements.map(statementRow));
    $("statements-empty").hidden = answer.statements.length > 0;
  }

  // -- explorer -------------------------------------------------------------------------
  // A metric's key: names never hold a space, so "type name" is unambiguous.
  const metricKey = (metric) => metric.type + " " + metric.name;
  const signatures = new Map();

  // Rebuild a select's options only when they changed, so a refresh neither closes an
  // open list nor loses the choice; return whether they changed.
  function setOptions(select, options) {
    const signature = JSON.stringify(options);
    if (signatures.get(select) === signature) return false;
    const chosen = select.value;
    select.replaceChildren(...options.map(([text, value]) => new Option(text, value)));
    signatures.set(select, signature);
    if (options.some(([, value]) => value === chosen)) select.value = chosen;
    return true;
  }

  function fillMetricSelect() {
    const select = $("metric-select");
    setOptions(select, state.metrics.map((m) => [m.name + " (" + m.type + ")", metricKey(m)]));
    const keys = state.metrics.map(metricKey);
    const wanted = state.metric ? metricKey(state.metric) : null;
    let key = wanted !== null && keys.includes(wanted) ? wanted : null;
    if (key === null) {
      const preferred = state.metrics.find((m) => m.name === "http.server.request.duration");
      key = preferred ? metricKey(preferred) : keys.length ? keys[0] : null;
    }
    state.metric = key === null ? null : state.metrics[keys.indexOf(key)];
    if (key !== null) select.value = key;
    fillFilters(key !== wanted);
  }

  function fillFilters(metricChanged) {
    const metric = state.metric;
    const stat = $("stat-select"), tag = $("tag-select");
    const stats = metric ? metric.stats : [];
    setOptions(stat, stats.map((s) => [s, s]));
    if (metricChanged && stats.length) stat.value = stats.includes("p95") ? "p95" : stats[0];
    const options = [["all series", ""]];
    for (const [key, values] of Object.entries(metric ? metric.tags : {})) {
      for (const value of values) {
        if (options.length < 200) options.push([key + "=" + value, key + "=" + value]);
      }
    }
    setOptions(tag, options);
    if (metricChanged) tag.value = "";
  }

  // A line's tags that tell it from the others (the tags every line shares say nothing).
  function distinctLabel(line, lines) {
    const parts = Object.entries(line.tags)
      .filter(([key, value]) => lines.length < 2 || lines.some((other) => other.tags[key] !== value))
      .map(([key, value]) => key + "=" + value);
    if (line.source && lines.some((other) => other.source !== line.source)) parts.push("source=" + line.source);
    return parts.length ? parts.join(", ") : line.label;
  }

  async function loadMetrics() {
    const answer = await getJson("/api/metrics");
    state.metrics = answer.metrics;
    fillMetricSelect();
  }

  async function loadExplorer() {
    const metric = state.metric;
    if (!metric) return;
    const stat = $("stat-select").value;
    const tag = $("tag-select").value;
    const answer = await getJson("/api/series", {
      name: metric.name, type: metric.type, stat: stat, tag: tag ? [tag] : [], window: chartWindow(),
    });
    const durations = metric.type === "timer" && DURATION_STATS.has(stat);
    // In label order, so that a refresh that reranks the same lines keeps each one's colour.
    const lines = answer.lines
      .map((line) => ({ label: distinctLabel(line, answer.lines), values: line.values }))
      .sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    lines.forEach((line, i) => { line.color = COLORS.palette[i % COLORS.palette.length]; });
    draw("explorer", answer.t, lines, durations ? msAxis : fmtNumber);
    const unit = durations ? " (ms)" : stat === "rate" ? " (per second)" : "";
    $("explorer-note").textContent = metric.name + " · " + stat + unit +
      (answer.more ? " · " + answer.more + " more series not shown: filter by a tag" : "");
  }

  // -- pipeline health ------------------------------------------------------------------
  function setCard(id, text, alert) {
    const card = $(id);
    card.querySelector(".card-value").textContent = text;
    card.classList.toggle("alert", alert === true);
    card.classList.toggle("ok", alert === false);
  }

  // Why events were dropped: the publishers' reasons (zibrato.publisher.dropped{reason})
  // and the dashboard's own caps, the most first. Reasons are peer-controlled text.
  const OWN_DROPS = {
    dropped_series: "series cap",
    dropped_set_members: "set members cap",
    history_capped_points: "history series cap",
    history_failed_points: "history write failed",
  };
  const SHOWN_REASONS = 4;

  function showDropReasons(drops) {
    const list = $("drop-reasons");
    const note = $("card-dropped").querySelector(".card-note");
    list.replaceChildren();
    note.hidden = drops.length > 0;
    list.hidden = drops.length === 0;
    const item = (count, text, by, title) => {
      const li = document.createElement("li");
      const number = document.createElement("span");
      number.className = "count";
      number.textContent = fmtNumber(count);
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = text;
      li.append(number, reason);
      if (by) {
        const who = document.createElement("span");
        who.className = "by";
        who.textContent = by;
        li.append(who);
      }
      li.title = title;
      list.append(li);
    };
    drops.slice(0, SHOWN_REASONS).forEach((drop) => {
      if (drop.by === "publisher") {
        item(drop.count, drop.reason, "publishers", "zibrato.publisher.dropped{reason=" + drop.reason + "}");
      } else {
        item(drop.count, OWN_DROPS[drop.reason] || drop.reason, "dashboard", "zibrato.backend." + drop.reason);
      }
    });
    const rest = drops.slice(SHOWN_REASONS);
    if (rest.length) {
      const others = rest.reduce((sum, drop) => sum + drop.count, 0);
      item(others, rest.length + " more reasons", "", rest.map((d) => d.reason + " " + d.count).join(", "));
    }
  }

  async function loadHealth() {
    const answer = await getJson("/api/health", { window: chartWindow() });
    const totals = answer.totals;
    const total = (...names) => names.reduce((sum, n) => sum + (totals[n] || 0), 0);
    const seconds = answer.seconds || 0;
    setCard("card-events", seconds ? fmtNumber(total("events") / seconds) : "–");
    const lost = total("lost_events");
    setCard("card-lost", fmtNumber(lost), lost > 0);
    const bad = total("bad_messages", "bad_events");
    setCard("card-bad", fmtNumber(bad), bad > 0);
    const drops = answer.drops || [];
    const dropped = drops.reduce((sum, drop) => sum + drop.count, 0);
    setCard("card-dropped", fmtNumber(dropped), dropped > 0);
    showDropReasons(drops);
    const history = answer.history;
    setCard("card-series", fmtNumber(history.series) + " / " + fmtNumber(history.max_series),
            history.series >= history.max_series ? true : undefined);
    $("card-series").querySelector(".card-note").textContent = "history file " + fmtBytes(history.bytes);
    const names = [
      ["events", "events/s", COLORS.requests],
      ["lost_events", "lost/s", COLORS.errors],
      ["bad_messages", "bad messages/s", COLORS.duplicates],
      ["bad_events", "bad events/s", COLORS.p95],
      ["publisher_dropped", "dropped by publishers/s", "#f472b6"],
      ["dropped_series", "series dropped/s", "#e879f9"],
    ];
    draw("health", answer.t, names
      .filter(([name]) => answer.lines[name])
      .map(([name, label, color]) => ({ label: label, values: answer.lines[name], color: color })),
      fmtNumber);
  }

  // -- status and refresh ---------------------------------------------------------------
  function setStatus(status, error) {
    const box = $("status"), text = $("status-text");
    if (error) {
      box.dataset.state = "offline";
      text.textContent = "cannot reach the dashboard backend";
      return;
    }
    state.flushInterval = status.flush_interval;
    if (status.last_flush === null) {
      box.dataset.state = "waiting";
      text.textContent = "waiting for the first flush";
      return;
    }
    const late = status.now - status.last_flush > 3 * status.flush_interval + 2;
    box.dataset.state = late ? "waiting" : "live";
    text.textContent = (late ? "no flush since " : "live · last flush ") + fmtTime(status.last_flush) +
      " · every " + fmtNumber(status.flush_interval) + " s";
  }

  async function run(task) {
    try {
      await task();
    } catch (error) {
      state.failures.push(String(error));
      setStatus(null, error);
    }
  }

  // Panels of their own files (static/tasks.js) draw with these helpers and load with the
  // rest: each is { loadTable(), loadCharts() }.
  state.kit = { getJson, draw, element, numberCell, heat, fmtMs, fmtNumber, fmtPercent, msAxis,
                chartWindow, tableWindow, run, COLORS };
  state.panels = [];
  const panelTables = () => state.panels.map((panel) => panel.loadTable());
  const panelCharts = () => state.panels.map((panel) => panel.loadCharts());

  async function refresh() {
    await run(async () => {
      await Promise.all([loadTable(), loadMetrics(), loadHealth(), ...panelTables()]);
      await Promise.all([loadRoute(), loadExplorer(), ...panelCharts()]);
      state.refreshes += 1;
      state.ready = true;
    });
  }

  async function poll() {
    try {
      const status = await getJson("/api/status");
      setStatus(status);
      if (status.last_flush !== state.lastFlush || !state.ready) {
        state.lastFlush = status.last_flush;
        await refresh();
      }
    } catch (error) {
      state.failures.push(String(error));
      setStatus(null, error);
    } finally {
      const delay = Math.min(5000, Math.max(1000, (state.flushInterval * 1000) / 2));
      window.setTimeout(poll, delay);
    }
  }

  // -- wiring ---------------------------------------------------------------------------
  function start() {
    $("routes").tHead.addEventListener("click", (event) => {
      const th = event.target.closest("th");
      if (!th) return;
      const key = th.dataset.key;
      state.sort = state.sort.key === key
        ? { key: key, descending: !state.sort.descending }
        : { key: key, descending: key !== "route" };
      renderTable();
    });
    $("routes").tBodies[0].addEventListener("click", (event) => {
      const tr = event.target.closest("tr");
      if (!tr || tr.dataset.route === undefined) return;
      state.route = tr.dataset.route;
      $("route-select").value = state.route;
      renderTable();
      run(loadRoute);
    });
    $("route-select").addEventListener("change", (event) => {
      state.route = event.target.value;
      renderTable();
      run(loadRoute);
    });
    $("metric-select").addEventListener("change", (event) => {
      state.metric = state.metrics.find((m) => metricKey(m) === event.target.value) || null;
      fillFilters(true);
      run(loadExplorer);
    });
    $("stat-select").addEventListener("change", () => run(loadExplorer));
    $("tag-select").addEventListener("change", () => run(loadExplorer));
    $("window").addEventListener("change", () => run(() => Promise.all([loadRoute(), loadExplorer(), loadHealth(), ...panelCharts()])));
    $("table-window").addEventListener("change", () => run(() => Promise.all([loadTable(), loadStatements(), ...panelTables()])));
    let resizing = null;
    window.addEventListener("resize", () => {
      window.clearTimeout(resizing);
      resizing = window.setTimeout(resizeCharts, 150);
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
