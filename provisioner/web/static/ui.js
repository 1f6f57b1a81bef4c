// Live updates for the dashboard: short polling of small JSON endpoints, a few lines of vanilla JS.
// Without JS the pages still work (a <noscript> meta refresh and reload links). Text goes in with textContent only.
(function () {
  "use strict";
  var PERIOD = 2000;

  // Fetch url() every PERIOD ms and hand the JSON to apply(); a 401 (session ended) reloads into the login page.
  function poll(url, apply) {
    function tick() {
      fetch(url(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
          return r.json();
        })
        .then(function (data) { apply(data); setTimeout(tick, PERIOD); })
        .catch(function () { setTimeout(tick, PERIOD * 3); });
    }
    setTimeout(tick, PERIOD);
  }

  function setText(root, field, text) {
    var el = root.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function setBar(root, percent, failed) {
    var bar = root.querySelector('progress[data-field="percent"]');
    if (bar) { bar.value = percent; bar.textContent = percent + "%"; bar.classList.toggle("failed", !!failed); }
  }

  function applyStatus(data) {
    var sections = document.querySelectorAll("section.pool[data-pool]");
    var byName = {};
    data.pools.forEach(function (p) { byName[p.name] = p.run; });
    for (var i = 0; i < sections.length; i++) {
      var section = sections[i];
      var run = byName[section.dataset.pool];
      var runId = run ? run.id : "";
      var active = run && run.active ? "1" : "0";
      if (runId !== section.dataset.runId || active !== section.dataset.active) {
        window.location.reload();  // a run started or ended: the buttons change, so redraw the page
        return;
      }
      if (!run) { continue; }
      var line = section.querySelector(".run-line");
      setText(line, "state", run.state);
      setText(section, "run-reason", run.reason || "");
      setText(line, "counts", run.done_hosts + "/" + run.hosts.length + " done" +
              (run.failed_hosts ? ", " + run.failed_hosts + " failed" : ""));
      setBar(line, run.percent, run.failed_hosts > 0);
      run.hosts.forEach(function (h) {
        var row = section.querySelector('tr[data-mac="' + h.mac + '"]');
        if (!row) { return; }
        setText(row, "step", h.step);
        setBar(row, h.percent, h.failed);
        row.classList.toggle("done", h.done);
        row.classList.toggle("failed", h.failed);
        var reason = row.querySelector('[data-field="reason"]');
        const said = h.reason || h.waiting || "";  // waiting: members reconnecting, the host-up timeout
        if (reason && !h.remedy && reason.textContent !== said) { reason.textContent = said; }
      });
    }
  }

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    tr.appendChild(td);
    return td;
  }

  // Append new event rows to a timeline table; its data-columns names the fields shown, in order.
  function applyTimeline(table) {
    var columns = (table.dataset.columns || "time,kind,attempt,client,summary").split(",");
    return function (data) {
      var body = table.tBodies[0];
      data.events.forEach(function (e) {
        var empty = body.querySelector("tr.empty");
        if (empty) { empty.remove(); }
        var tr = document.createElement("tr");
        tr.className = "level-" + e.level;
        tr.dataset.event = e.id;
        columns.forEach(function (name) {
          var td = cell(tr, name === "attempt" ? (e.attempt ? "#" + e.attempt : "") : e[name]);
          if (name === "time") { td.className = "ts"; }
        });
        body.appendChild(tr);
        table.dataset.since = e.id;
      });
      var max = parseInt(table.dataset.maxRows || "0", 10);  // a long run: keep only the newest rows
      while (max > 0 && body.rows.length > max) { body.deleteRow(0); }
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var statusUrl = document.body.dataset.statusUrl;
    if (statusUrl && document.querySelector("section.pool[data-pool]")) {
      poll(function () { return statusUrl; }, applyStatus);
    }
    var table = document.getElementById("timeline");
    if (table) {
      poll(function () {
        return table.dataset.timelineUrl + "?since=" + encodeURIComponent(table.dataset.since || "0");
      }, applyTimeline(table));
    }
  });
})();
