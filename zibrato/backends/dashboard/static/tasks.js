/* Zibrato dashboard: the Tasks table and one task's charts (Celery, docs/celery.md).
 *
 * A panel of its own file: it draws with the helpers dashboard.js exposes
 * (window.zibratoDashboard.kit) and registers itself in its panels, which load with the
 * rest of the page. Task names are peer-controlled text: textContent and option text only.
 */
(function () {
  "use strict";

  const dashboard = window.zibratoDashboard;
  if (!dashboard || !dashboard.kit) return;
  const kit = dashboard.kit;
  const $ = (id) => document.getElementById(id);
  const COLORS = kit.COLORS;

  // Exposed with the dashboard's state, for tests and the curious.
  const state = { rows: [], task: null, sort: { key: "p95", descending: true } };
  dashboard.tasks = state;

  function flatten(row) {
    const pick = (group, key) => (row[group] ? row[group][key] : null);
    return {
      task: row.task,
      tasks: row.tasks,
      rate: row.rate,
      failures: row.failures,
      failure_ratio: row.failure_ratio,
      p50: pick("run", "p50"),
      p95: pick("run", "p95"),
      p99: pick("run", "p99"),
      queue_p95: pick("queue", "p95"),
      queries_p95: pick("queries", "p95"),
      duplicates_mean: pick("duplicates", "mean"),
    };
  }

  function compareRows(a, b) {
    const { key, descending } = state.sort;
    const x = a[key], y = b[key];
    if (x === y) return a.task < b.task ? -1 : 1;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return descending ? -order : order;
  }

  function renderTable() {
    const rows = state.rows.slice().sort(compareRows);
    const max = (key) => Math.max(0, ...rows.map((r) => r[key] || 0));
    const many = rows.length > 1;
    const top = { rate: max("rate"), p95: max("p95"), p99: max("p99"), queries: max("queries_p95"),
                  queue: max("queue_p95") };
    const cell = kit.numberCell;
    $("tasks").tBodies[0].replaceChildren(...rows.map((row) => {
      const tr = kit.element("tr");
      tr.dataset.task = row.task;
      if (row.task === state.task) tr.classList.add("selected");
      const name = kit.element("td", "text route", row.task);
      name.title = row.task;
      if (row.duplicates_mean >= 1) name.append(kit.element("span", "badge n1", "N+1"));
      if (row.failures > 0) name.append(kit.element("span", "badge errors", kit.fmtNumber(row.failures) + " failed"));
      tr.append(
        name,
        cell(kit.fmtNumber(row.rate), row.rate, top.rate),
        cell(kit.fmtPercent(row.failure_ratio), null, 0,
             row.failure_ratio > 0.01 ? "heat-3" : row.failure_ratio > 0 ? "heat-1" : "muted"),
        cell(kit.fmtMs(row.p50), null, 0),
        cell(kit.fmtMs(row.p95), row.p95, top.p95, many ? kit.heat(row.p95, top.p95) : ""),
        cell(kit.fmtMs(row.p99), null, 0, many ? kit.heat(row.p99, top.p99) : ""),
        cell(kit.fmtMs(row.queue_p95), null, 0,
             row.queue_p95 === null ? "muted" : many ? kit.heat(row.queue_p95, top.queue) : ""),
        cell(kit.fmtNumber(row.queries_p95), row.queries_p95, top.queries,
             many ? kit.heat(row.queries_p95, top.queries) : ""),
        cell(kit.fmtNumber(row.duplicates_mean), null, 0,
             row.duplicates_mean >= 1 ? "heat-2" : row.duplicates_mean === null ? "muted" : ""),
      );
      return tr;
    }));
    $("tasks-empty").hidden = rows.length > 0;
    for (const th of $("tasks").tHead.rows[0].cells) {
      th.classList.toggle("sorted", th.dataset.key === state.sort.key);
      th.classList.toggle("ascending", th.dataset.key === state.sort.key && !state.sort.descending);
    }
  }

  async function loadTable() {
    const answer = await kit.getJson("/api/tasks", { window: kit.tableWindow() });
    state.rows = answer.tasks.map(flatten);
    const names = state.rows.map((r) => r.task);
    if (state.task === null && state.rows.length) {
      state.task = state.rows.slice().sort(compareRows)[0].task;
    }
    const select = $("task-select");
    const known = new Set(Array.from(select.options, (o) => o.value));
    for (const name of names.slice().sort()) {
      if (!known.has(name)) select.add(new Option(name, name));
    }
    if (state.task !== null) select.value = state.task;
    renderTable();
  }

  async function loadCharts() {
    if (state.task === null) return;
    const answer = await kit.getJson("/api/task", { task: state.task, window: kit.chartWindow() });
    const l = answer.lines;
    kit.draw("task-rate", answer.t, [
      { label: "tasks/s", values: l["run.rate"], color: COLORS.requests, fill: "rgba(129,140,248,0.16)" },
      { label: "failures/s", values: l["failures.rate"], color: COLORS.errors },
    ], kit.fmtNumber);
    kit.draw("task-latency", answer.t, [
      { label: "run p50", values: l["run.p50"], color: COLORS.p50 },
      { label: "run p95", values: l["run.p95"], color: COLORS.p95 },
      { label: "run p99", values: l["run.p99"], color: COLORS.p99 },
      { label: "queue p95", values: l["queue.p95"], color: COLORS.view, dash: [6, 4] },
    ], kit.msAxis);
    kit.draw("task-queries", answer.t, [
      { label: "queries p95", values: l["queries.p95"], color: COLORS.queries, fill: "rgba(167,139,250,0.14)" },
      { label: "queries mean", values: l["queries.mean"], color: COLORS.queriesMean, dash: [6, 4] },
      { label: "duplicates mean", values: l["duplicates.mean"], color: COLORS.duplicates },
    ], kit.fmtNumber);
  }

  function choose(task) {
    state.task = task;
    $("task-select").value = task;
    renderTable();
    kit.run(loadCharts);
  }

  $("tasks").tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    const key = th.dataset.key;
    state.sort = state.sort.key === key
      ? { key: key, descending: !state.sort.descending }
      : { key: key, descending: key !== "task" };
    renderTable();
  });
  $("tasks").tBodies[0].addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr && tr.dataset.task !== undefined) choose(tr.dataset.task);
  });
  $("task-select").addEventListener("change", (event) => choose(event.target.value));

  dashboard.panels.push({ loadTable: loadTable, loadCharts: loadCharts });
})();
