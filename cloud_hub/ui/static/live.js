// Live telemetry of one device: an EventSource of stored messages, the latest scoring result and
// a chart (uPlot) of one numeric field.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) return;
  var MAX_ROWS = 100, MAX_POINTS = 300;
  var status = document.getElementById("live-status");
  var tbody = document.querySelector("#messages tbody");
  var fieldInput = document.getElementById("chart-field");
  var options = document.getElementById("field-options");
  var known = {};
  var count = 0;
  var field = root.getAttribute("data-field") || "";
  var points = [[], []];
  var chart = null;

  function numericPaths(value, prefix, out) {
    if (typeof value === "number") out.push(prefix);
    else if (value && typeof value === "object" && !Array.isArray(value)) {
      Object.keys(value).forEach(function (k) { numericPaths(value[k], prefix ? prefix + "." + k : k, out); });
    }
    return out;
  }
  function at(value, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? undefined : v[k]; }, value);
  }
  function parse(msg) {
    if (msg.bodyEncoding !== "utf-8") return null;
    try { return JSON.parse(msg.body); } catch (e) { return null; }
  }
  function cell(row, text) { var td = row.insertCell(); td.textContent = text; return td; }

  // scoring results carry their top-k classes as "top5" (or "top3", ... as many as asked)
  function topClasses(doc) {
    var key = Object.keys(doc).find(function (k) { return /^top[0-9]+$/.test(k) && Array.isArray(doc[k]); });
    return key ? doc[key] : null;
  }

  // a camera thumbnail: a binary message whose content type ($.ct) is an image
  function showThumbnail(msg) {
    var type = (msg.systemProperties || {})["$.ct"] || "";
    if (msg.bodyEncoding !== "base64" || type.indexOf("image/") !== 0) return false;
    var props = msg.properties || {};
    var img = document.getElementById("thumbnail");
    img.src = "data:" + type + ";base64," + msg.body;
    var caption = [props.label, props.score && Number(props.score).toFixed(3),
                   props.frameName, msg.enqueuedTimeUtc].filter(Boolean).join(" · ");
    img.alt = "camera thumbnail" + (props.label ? ": " + props.label : "");
    document.getElementById("thumb-caption").textContent = caption;
    document.getElementById("thumb-box").hidden = false;
    return true;
  }

  function showResult(doc, top, msg) {
    var list = document.getElementById("top-classes");
    list.innerHTML = "";
    top.forEach(function (c) {
      var li = document.createElement("li");
      var pct = Math.max(0, Math.min(100, 100 * Number(c.score || 0)));
      li.innerHTML = '<span class="label"></span><span class="bar"><span class="fill ok"></span></span><span class="bar-num"></span>';
      li.querySelector(".label").textContent = c.label || ("class " + c.class_id);
      li.querySelector(".fill").style.width = pct.toFixed(1) + "%";
      li.querySelector(".bar-num").textContent = Number(c.score || 0).toFixed(3);
      list.appendChild(li);
    });
    var meta = [doc.frame && ("frame " + doc.frame), doc.model, doc.accelerator,
                doc.latencyMs != null && (Number(doc.latencyMs).toFixed(1) + " ms"), msg.enqueuedTimeUtc];
    document.getElementById("result-meta").textContent = meta.filter(Boolean).join(" · ");
  }

  function plot(doc, msg) {
    if (!field) return;
    var v = at(doc, field);
    if (typeof v !== "number") return;
    points[0].push(Date.parse(msg.enqueuedTimeUtc) / 1000);
    points[1].push(v);
    if (points[0].length > MAX_POINTS) { points[0].shift(); points[1].shift(); }
    document.getElementById("chart-empty").hidden = true;
    var box = document.getElementById("chart");
    if (!chart && window.uPlot) {
      chart = new uPlot({
        width: Math.max(280, box.clientWidth), height: 220,
        series: [{}, { label: field, stroke: "#2563eb", width: 2 }],
        axes: [{}, {}],
      }, points, box);
    } else if (chart) {
      chart.setData(points);
    }
  }

  function resetChart() {
    points = [[], []];
    if (chart) { chart.destroy(); chart = null; }
    document.getElementById("chart-empty").hidden = false;
  }

  fieldInput.value = field;
  fieldInput.addEventListener("change", function () { field = fieldInput.value.trim(); resetChart(); });
  document.getElementById("field-form").addEventListener("submit", function (e) { e.preventDefault(); });

  var source = new EventSource(root.getAttribute("data-stream"));
  source.onopen = function () { status.textContent = "live"; status.className = "pill ok"; };
  source.onerror = function () { status.textContent = "reconnecting"; status.className = "pill pending"; };
  source.addEventListener("message", function (event) {
    var msg = JSON.parse(event.data);
    count += 1;
    document.getElementById("msg-count").textContent = count;
    var row = tbody.insertRow(0);
    cell(row, msg.sequenceNumber);
    cell(row, msg.enqueuedTimeUtc);
    cell(row, msg.moduleId || "(device)");
    cell(row, msg.bodyEncoding === "utf-8" ? msg.body.slice(0, 200) : "(" + msg.body.length + " base64 chars)");
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
    if (showThumbnail(msg)) return;
    var doc = parse(msg);
    if (!doc || typeof doc !== "object") return;
    var top = topClasses(doc);
    if (top) showResult(doc, top, msg);
    numericPaths(doc, "", []).forEach(function (p) {
      if (known[p]) return;
      known[p] = true;
      var opt = document.createElement("option"); opt.value = p; options.appendChild(opt);
      if (!field) { field = p; fieldInput.value = p; }
    });
    plot(doc, msg);
  });
})();
