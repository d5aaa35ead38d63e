// The report's only script (inline, no network): the x-axis picker of the quality-vs-cost
// charts, sortable tables and the leaderboard filter. Without it the page shows the default
// axis (each base's first, where it lacks that one) and tables in their original order.
(function () {
  "use strict";

  var buttons = Array.prototype.slice.call(document.querySelectorAll(".picker button"));
  function pickAxis(axis) {
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-axis") === axis));
    });
    document.querySelectorAll("#overview .base").forEach(function (base) {
      var shown = false;
      base.querySelectorAll(".view").forEach(function (view) {
        var on = view.getAttribute("data-axis") === axis;
        view.hidden = !on;
        shown = shown || on;
      });
      var note = base.querySelector(".no-axis");
      if (note) note.hidden = shown;
    });
  }
  buttons.forEach(function (b) {
    b.addEventListener("click", function () { pickAxis(b.getAttribute("data-axis")); });
  });
  var pressed = buttons.filter(function (b) { return b.getAttribute("aria-pressed") === "true"; });
  if (pressed.length) pickAxis(pressed[0].getAttribute("data-axis"));

  // Numbers sort by their data-v value, text by locale; empty cells always last.
  function sortKey(cell) {
    if (!cell) return null;
    var v = cell.getAttribute("data-v");
    if (v !== null) return parseFloat(v);
    if (cell.classList.contains("missing")) return null;
    return cell.textContent.trim();
  }
  function sortTable(table, column, th) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    // Each body (one per base model in the leaderboard) is sorted on its own; its group
    // heading stays on top.
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.filter.call(body.rows, function (r) {
        return !r.classList.contains("group");
      });
      rows.sort(function (a, b) {
        var x = sortKey(a.cells[column]), y = sortKey(b.cells[column]);
        if (x === null || y === null) return (x === null) - (y === null);
        var order = typeof x === "number" && typeof y === "number"
          ? x - y
          : String(x).localeCompare(String(y), undefined, { numeric: true });
        return ascending ? order : -order;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.addEventListener("click", function () { sortTable(table, column, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, column, th); }
      });
    });
  });

  // Leaderboard filter: every word must appear in the base model or the method; the base
  // select keeps one base model.
  var filter = document.getElementById("lb-filter");
  var baseSelect = document.getElementById("lb-base");
  var board = document.getElementById("lb");
  var count = document.getElementById("lb-count");
  function applyFilter() {
    if (!board) return;
    var words = (filter ? filter.value : "").toLowerCase().split(/\s+/).filter(Boolean);
    var base = baseSelect ? baseSelect.value : "";
    var total = 0, shown = 0;
    Array.prototype.forEach.call(board.tBodies, function (body) {
      var name = body.getAttribute("data-base");
      var inBody = 0;
      Array.prototype.forEach.call(body.rows, function (row) {
        if (row.classList.contains("group")) return;
        total++;
        var text = (name + " " + row.cells[0].textContent).toLowerCase();
        var visible = (!base || name === base) &&
          words.every(function (w) { return text.indexOf(w) >= 0; });
        row.hidden = !visible;
        if (visible) inBody++;
      });
      body.hidden = inBody === 0;
      shown += inBody;
    });
    if (count) count.textContent = shown === total ? total + " rows" : shown + " of " + total + " rows";
  }
  if (filter) filter.addEventListener("input", applyFilter);
  if (baseSelect) baseSelect.addEventListener("change", applyFilter);
})();
