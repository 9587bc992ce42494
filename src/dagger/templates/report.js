// The report's behaviour: details of a clicked state, a sortable, filterable, paginated
// table. Plain DOM, no library. Every value is written with textContent, never as markup.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("dagger-data").textContent);
  var states = new Map();
  var children = new Map();
  data.states.forEach(function (state) {
    states.set(state.id, state);
    children.set(state.id, []);
  });
  data.states.forEach(function (state) {
    if (state.parent && children.has(state.parent)) children.get(state.parent).push(state.id);
  });
  var groupOf = new Map();
  Object.keys(data.groups).forEach(function (key) {
    data.groups[key].forEach(function (id) { groupOf.set(id, key); });
  });

  var columns = data.columns;
  var idColumn = columns.indexOf("id");
  var statusColumn = columns.indexOf("status");
  var table = {
    rows: data.rows,
    sortColumn: -1,
    descending: false,
    words: [],
    only: null,       // a Set of ids (a folded group), or null
    onlyLabel: "",
    page: 0,
    pageSize: data.page_size
  };
  var selectedId = null;

  // -- formatting ----------------------------------------------------------------------------

  function isNumber(value) {
    return typeof value === "number" && isFinite(value);
  }

  function formatNumber(value) {
    if (Number.isInteger(value)) return String(value);
    var magnitude = Math.abs(value);
    if (magnitude >= 1e4 && magnitude < 1e7) return value.toFixed(0);
    return String(Number(value.toPrecision(4)));
  }

  function formatValue(value) {
    if (value === null || value === undefined) return "";
    if (value === true || value === false) return value ? "True" : "False";  // as Python says
    if (isNumber(value)) return formatNumber(value);
    if (Array.isArray(value)) return value.map(formatValue).join(", ");
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function tagText(tag) {
    return tag.trim() ? tag : JSON.stringify(tag);  // an empty or blank tag, visibly
  }

  function cellText(column, value) {
    if ((column === "id" || column === "parent") && typeof value === "string") {
      return value.slice(0, 12);
    }
    if (column === "tags" && Array.isArray(value)) return value.map(tagText).join(", ");
    return formatValue(value);
  }

  function element(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // -- the table -----------------------------------------------------------------------------

  var rowText = data.rows.map(function (row) {
    return row.map(function (value, index) {
      return columns[index] === "id" ? String(value) : formatValue(value);
    }).join(" \u0001 ").toLowerCase();
  });
  var rowIndex = new Map();
  data.rows.forEach(function (row, index) { rowIndex.set(row[idColumn], index); });

  function compare(a, b) {
    // Missing values last, whichever the direction; numbers by value, text naturally.
    var aMissing = a === null || a === undefined || a === "";
    var bMissing = b === null || b === undefined || b === "";
    if (aMissing || bMissing) return aMissing === bMissing ? 0 : (aMissing ? 1 : -1);
    var order;
    if (isNumber(a) && isNumber(b)) order = a - b;
    else if (isNumber(a) !== isNumber(b)) order = isNumber(a) ? -1 : 1;
    else order = formatValue(a).localeCompare(formatValue(b), undefined, { numeric: true });
    return table.descending ? -order : order;
  }

  function visibleRows() {
    var indices = [];
    for (var index = 0; index < data.rows.length; index++) {
      var row = data.rows[index];
      if (table.only && !table.only.has(row[idColumn])) continue;
      var text = rowText[index];
      if (table.words.every(function (word) { return text.indexOf(word) !== -1; })) indices.push(index);
    }
    if (table.sortColumn >= 0) {
      var column = table.sortColumn;
      indices.sort(function (left, right) {
        var order = compare(data.rows[left][column], data.rows[right][column]);
        return order !== 0 ? order : left - right;  // stable: ties keep tree order
      });
    }
    return indices;
  }

  function drawHeader() {
    var head = document.querySelector("#states thead tr");
    head.textContent = "";
    columns.forEach(function (column, index) {
      var th = element("th");
      th.setAttribute("scope", "col");
      th.dataset.column = column;
      if (index === table.sortColumn) th.setAttribute("aria-sort", table.descending ? "descending" : "ascending");
      var button = element("button", column);
      button.type = "button";
      button.title = "Sort by " + column;
      button.addEventListener("click", function () {
        if (table.sortColumn === index) table.descending = !table.descending;
        else { table.sortColumn = index; table.descending = false; }
        table.page = 0;
        drawHeader();
        drawTable();
      });
      th.appendChild(button);
      head.appendChild(th);
    });
  }

  function drawTable() {
    var indices = visibleRows();
    var size = table.pageSize > 0 ? table.pageSize : Math.max(indices.length, 1);
    var pages = Math.max(1, Math.ceil(indices.length / size));
    table.page = Math.min(table.page, pages - 1);
    var start = table.page * size;
    var shown = indices.slice(start, start + size);
    var body = document.querySelector("#states tbody");
    var fragment = document.createDocumentFragment();
    shown.forEach(function (index) {
      var row = data.rows[index];
      var tr = element("tr");
      var id = row[idColumn];
      tr.dataset.id = id;
      if (statusColumn >= 0 && row[statusColumn] === "failed") tr.classList.add("failed");
      if (id === selectedId) tr.classList.add("selected");
      row.forEach(function (value, column) {
        var td = element("td", cellText(columns[column], value));
        td.dataset.column = columns[column];
        if (isNumber(value)) td.classList.add("number");
        if (columns[column] === "id" || columns[column] === "parent") {
          td.classList.add("id");
          if (value) td.title = value;
        } else if (td.textContent.length > 40) {
          td.title = td.textContent;
        }
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () { showState(id, true); });
      fragment.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(fragment);
    var total = data.rows.length;
    var count = indices.length === total ? total + " states" : indices.length + " of " + total + " states";
    document.getElementById("count").textContent = count;
    document.getElementById("page-info").textContent = indices.length
      ? "rows " + (start + 1) + "\u2013" + (start + shown.length) + ", page " + (table.page + 1) + " of " + pages
      : "no state matches";
    document.getElementById("prev").disabled = table.page === 0;
    document.getElementById("next").disabled = table.page >= pages - 1;
    var groupFilter = document.getElementById("group-filter");
    groupFilter.hidden = !table.only;
    document.getElementById("group-filter-text").textContent = table.onlyLabel;
  }

  document.getElementById("filter").addEventListener("input", function (event) {
    table.words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    table.page = 0;
    drawTable();
  });
  var pageSize = document.getElementById("page-size");
  pageSize.value = String(table.pageSize);
  if (pageSize.value !== String(table.pageSize)) {
    pageSize.appendChild(element("option", String(table.pageSize))).value = String(table.pageSize);
    pageSize.value = String(table.pageSize);
  }
  pageSize.addEventListener("change", function (event) {
    table.pageSize = Number(event.target.value);
    table.page = 0;
    drawTable();
  });
  document.getElementById("prev").addEventListener("click", function () { table.page -= 1; drawTable(); });
  document.getElementById("next").addEventListener("click", function () { table.page += 1; drawTable(); });
  document.getElementById("clear-group").addEventListener("click", function () {
    table.only = null;
    table.onlyLabel = "";
    table.page = 0;
    drawTable();
  });

  // -- the drawing ---------------------------------------------------------------------------

  function highlight(id) {
    document.querySelectorAll("#drawing g.node.selected").forEach(function (node) {
      node.classList.remove("selected");
    });
    document.querySelectorAll("#states tbody tr.selected").forEach(function (row) {
      row.classList.remove("selected");
    });
    if (!id) return null;
    var row = document.querySelector('#states tbody tr[data-id="' + id + '"]');
    if (row) row.classList.add("selected");
    var node = document.getElementById("state-" + id) ||
      (groupOf.has(id) ? document.getElementById(groupOf.get(id)) : null);
    if (node) node.classList.add("selected");
    return node;
  }

  document.querySelectorAll("#drawing g.node").forEach(function (node) {
    var key = node.id || "";
    if (key.indexOf("state-") === 0) {
      node.addEventListener("click", function () { showState(key.slice(6), false); });
    } else if (key.indexOf("group-") === 0) {
      node.addEventListener("click", function () { showGroup(key); });
    }
  });

  // Zoom: the drawing fits the panel unless that makes its text too small to read; then it
  // is shown larger, scrolled to its root.
  var drawing = document.getElementById("drawing");
  var svg = drawing.querySelector("svg");
  var zoom = { natural: 0, scale: 1 };
  function setScale(scale) {
    zoom.scale = Math.min(Math.max(scale, 0.05), 4);
    svg.style.width = Math.round(zoom.natural * zoom.scale) + "px";
    document.getElementById("zoom-level").textContent = Math.round(zoom.scale * 100) + "%";
  }
  function fitScale() {
    var room = drawing.clientWidth - 20;
    return Math.min(1, room / zoom.natural);
  }
  if (svg) {
    var box = svg.viewBox && svg.viewBox.baseVal;
    // Graphviz sizes its SVG in points; CSS pixels are 4/3 of a point.
    zoom.natural = (box && box.width ? box.width : svg.getBoundingClientRect().width) * 4 / 3;
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    setScale(Math.max(fitScale(), Math.min(1, 0.6)));
    var root = drawing.querySelector("g.node.state");
    if (root && zoom.scale > fitScale()) {
      var rootBox = root.getBoundingClientRect();
      var panel = drawing.getBoundingClientRect();
      drawing.scrollLeft += rootBox.left + rootBox.width / 2 - panel.left - panel.width / 2;
    }
    document.getElementById("zoom-in").addEventListener("click", function () { setScale(zoom.scale * 1.25); });
    document.getElementById("zoom-out").addEventListener("click", function () { setScale(zoom.scale / 1.25); });
    document.getElementById("zoom-fit").addEventListener("click", function () { setScale(fitScale()); });
    document.getElementById("zoom-actual").addEventListener("click", function () { setScale(1); });
  }

  // -- details -------------------------------------------------------------------------------

  function stateLink(id) {
    var state = states.get(id);
    var button = element("button", state ? state.step : id.slice(0, 12), "link");
    button.type = "button";
    button.title = id;
    button.addEventListener("click", function () { showState(id, true); });
    return button;
  }

  function definitionList(pairs) {
    var list = element("dl");
    pairs.forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") return;
      list.appendChild(element("dt", pair[0]));
      var dd = element("dd");
      if (pair[1] instanceof Node) dd.appendChild(pair[1]);
      else dd.textContent = pair[1];
      list.appendChild(dd);
    });
    return list;
  }

  function flatten(prefix, value, into) {
    // Dict results one row per key (measure.value, measure.ratio), as in the table's columns.
    if (value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
      Object.keys(value).forEach(function (key) { flatten(prefix + "." + key, value[key], into); });
    } else {
      into.push([prefix, value]);
    }
    return into;
  }

  function valueTable(values, reprs) {
    var tableNode = element("table");
    Object.keys(values).forEach(function (name) {
      var rows = reprs && reprs.indexOf(name) !== -1 ? [[name, values[name]]] : flatten(name, values[name], []);
      rows.forEach(function (pair) {
        var tr = element("tr");
        tr.appendChild(element("td", pair[0]));
        var value = pair[1];
        var cell = element("td", typeof value === "string" ? value : formatValue(value));
        if (isNumber(value) && !Number.isInteger(value)) cell.title = String(value);  // full precision
        else if (typeof value === "object" && value !== null) cell.title = JSON.stringify(value);
        tr.appendChild(cell);
        tableNode.appendChild(tr);
      });
    });
    return tableNode;
  }

  function section(panel, title, content) {
    panel.appendChild(element("h4", title));
    panel.appendChild(content);
  }

  function showState(id, fromTable) {
    var state = states.get(id);
    if (!state) return;
    selectedId = id;
    var panel = document.getElementById("details");
    panel.textContent = "";
    panel.dataset.id = id;
    panel.appendChild(element("h3", state.step));
    var status = element("span", state.status, "chip status-" + state.status);
    panel.appendChild(definitionList([
      ["id", element("span", state.id, "id")],
      ["recipe", state.name],
      ["status", status],
      ["tags", state.tags.map(tagText).join(", ")],
      ["seconds", isNumber(state.seconds) ? formatNumber(state.seconds) + " s" : ""],
      ["created", state.created]
    ]));
    var params = state.params || {};
    if (Object.keys(params).length) section(panel, state.parent ? "Parameters" : "Properties", valueTable(params));
    if (Object.keys(state.results || {}).length) section(panel, "Results", valueTable(state.results, state.result_reprs));
    if (state.error) {
      var error = element("div");
      error.appendChild(element("p", (state.error.type || "Error") + ": " + (state.error.message || ""), "error"));
      if (state.error.traceback) {
        var more = element("details");
        more.appendChild(element("summary", "Traceback"));
        more.appendChild(element("pre", state.error.traceback));
        error.appendChild(more);
      }
      section(panel, "Error", error);
    }
    var failedFunctions = Object.keys(state.function_errors || {});
    if (failedFunctions.length) {
      var failures = element("ul");
      failedFunctions.forEach(function (name) {
        var record = state.function_errors[name];
        failures.appendChild(element("li", name + ": " + (record.type || "Error") + (record.message ? ": " + record.message : ""), "error"));
      });
      section(panel, "Failed functions", failures);
    }
    var lineage = [];
    for (var cursor = state; cursor; cursor = cursor.parent ? states.get(cursor.parent) : null) lineage.unshift(cursor.id);
    var path = element("ol");
    path.className = "lineage";
    lineage.forEach(function (ancestor) {
      var item = element("li");
      if (ancestor === id) item.appendChild(element("b", state.step));
      else item.appendChild(stateLink(ancestor));
      path.appendChild(item);
    });
    section(panel, "Lineage", path);
    var below = children.get(id) || [];
    if (below.length) {
      var list = element("ul");
      below.slice(0, 50).forEach(function (child) {
        var item = element("li");
        item.appendChild(stateLink(child));
        list.appendChild(item);
      });
      if (below.length > 50) list.appendChild(element("li", "and " + (below.length - 50) + " more"));
      section(panel, "Children (" + below.length + ")", list);
    }
    if (state.environment && Object.keys(state.environment).length) section(panel, "Environment", valueTable(state.environment));
    var node = highlight(id);
    if (fromTable && node && node.scrollIntoView) node.scrollIntoView({ block: "nearest", inline: "nearest" });
    if (history.replaceState) history.replaceState(null, "", "#state-" + id);
  }

  function showGroup(key) {
    var members = data.groups[key] || [];
    if (!members.length) return;
    var first = states.get(members[0]);
    selectedId = null;
    var panel = document.getElementById("details");
    panel.textContent = "";
    panel.dataset.id = key;
    var label = members.length + " \u00d7 " + first.name;
    panel.appendChild(element("h3", label));
    var counts = {};
    members.forEach(function (id) {
      var status = states.get(id).status;
      counts[status] = (counts[status] || 0) + 1;
    });
    panel.appendChild(element("p", Object.keys(counts).sort().map(function (status) {
      return counts[status] + " " + status;
    }).join(", ")));
    var show = element("button", "Show these " + members.length + " states in the table");
    show.type = "button";
    show.id = "show-group";
    show.addEventListener("click", function () {
      table.only = new Set(members);
      table.onlyLabel = "Only the " + label + " group.";
      table.page = 0;
      drawTable();
      document.getElementById("table-section").scrollIntoView({ block: "start" });
    });
    panel.appendChild(show);
    var list = element("ol");
    members.slice(0, 200).forEach(function (id) {
      var item = element("li");
      item.appendChild(stateLink(id));
      list.appendChild(item);
    });
    if (members.length > 200) list.appendChild(element("li", "and " + (members.length - 200) + " more"));
    section(panel, "States", list);
    highlight(null);
    var node = document.getElementById(key);
    if (node) node.classList.add("selected");
  }

  drawHeader();
  drawTable();
  var wanted = decodeURIComponent(location.hash || "").replace(/^#state-/, "");
  if (wanted && states.has(wanted)) showState(wanted, true);
})();
