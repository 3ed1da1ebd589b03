/* report-builder: draw the report's interactive charts.
 *
 * Each chart is <div class="report-chart" data-chart="NAME" data-figure="FIGURE"> holding a link to
 * its Vega-Lite spec (assets/charts/NAME.json, data inlined). This script, loaded after the bundled
 * vega, vega-lite and vega-embed (mkdocs.yml: extra_javascript), fetches the spec from the site
 * itself, fits its panels to the page width and draws it with vegaEmbed (SVG, tooltips, zoom).
 * Once drawn, the static figure just before the chart (the <img>s of assets/figures/FIGURE*.png) is
 * hidden on screen; it stays the fallback without JavaScript, in print and when drawing fails.
 * Charts are redrawn when the reader switches Material's colour scheme (Vega's dark theme on
 * "slate") or the page width changes, and after each page change of Material's instant navigation.
 * The container's data-chart-state says "loading", "drawn" or "failed" (data-chart-error: why).
 */
(function () {
  "use strict";

  var SELECTOR = ".report-chart";
  var AXIS_ALLOWANCE = 72; // px left of and right of the panels: the y axis, its title and labels
  var MIN_WIDTH = 160;
  var STYLE = [
    ".report-chart { margin: 1em 0; }",
    ".report-chart__view { display: block; width: 100%; overflow: hidden; }",
    ".report-chart__view.vega-embed { display: block; }",
    ".report-chart--drawn > p { display: none; }",
    "@media screen { .report-chart-fallback { display: none !important; } }",
    "@media print { .report-chart { display: none !important; } .report-chart-fallback { display: block !important; } }"
  ].join("\n");
  var charts = [];

  function darkScheme() {
    return document.body && document.body.getAttribute("data-md-color-scheme") === "slate";
  }

  function addStyle() {
    if (document.getElementById("report-charts-style")) { return; }
    var style = document.createElement("style");
    style.id = "report-charts-style";
    style.textContent = STYLE;
    document.head.appendChild(style);
  }

  function panelWidth(container) {
    return Math.max(MIN_WIDTH, Math.floor(container.clientWidth) - AXIS_ALLOWANCE);
  }

  var NARROW = 600; // px of container below which a chart is laid out for a phone
  var CHARACTER = 7; // px per character of an 11-13 px label, a rough average

  // Break `text` into lines of at most `limit` px (by the rough character width), at spaces.
  function wrapped(text, limit) {
    var most = Math.max(12, Math.floor(limit / CHARACTER));
    if (text.length <= most) { return text; }
    var lines = [], line = "";
    text.split(" ").forEach(function (word) {
      if (line && (line + " " + word).length > most) { lines.push(line); line = word; } else { line = line ? line + " " + word : word; }
    });
    if (line) { lines.push(line); }
    return lines;
  }

  // Every title (chart, panel, axis) of `node` wrapped to `limit` px.
  function wrapTitles(node, limit) {
    if (Array.isArray(node)) { node.forEach(function (item) { wrapTitles(item, limit); }); return; }
    if (!node || typeof node !== "object") { return; }
    Object.keys(node).forEach(function (key) {
      if (key === "title" && typeof node[key] === "string") { node[key] = wrapped(node[key], limit); }
      else if (key === "title" && node[key] && typeof node[key].text === "string") { node[key].text = wrapped(node[key].text, limit); }
      else if (key !== "datasets" && key !== "data" && key !== "tooltip") { wrapTitles(node[key], limit); }
    });
  }

  // A copy of the spec with every panel of numeric width set to `width` CSS px. In a narrow
  // container (a phone) the legend wraps into columns and long titles into lines, so the chart
  // fits the column at its own font sizes instead of being shrunk to fit.
  function sized(spec, width, containerWidth) {
    var copy = JSON.parse(JSON.stringify(spec));
    (copy.vconcat || copy.hconcat || [copy]).forEach(function (view) {
      if (typeof view.width === "number") { view.width = width; }
    });
    if (containerWidth < NARROW) {
      var config = copy.config = copy.config || {};
      config.legend = Object.assign({}, config.legend, {columns: Math.max(1, Math.floor(containerWidth / 130)),
                                                        labelLimit: Math.floor(containerWidth / 2)});
      config.axis = Object.assign({}, config.axis, {labelOverlap: "greedy"});
      wrapTitles(copy, Math.max(MIN_WIDTH, width));
    }
    return copy;
  }

  // The static figure this chart replaces on screen: the element just before the container, when
  // it shows assets/figures/FIGURE.png (or its dark variant).
  function fallbackOf(container) {
    var figure = container.getAttribute("data-figure");
    var previous = container.previousElementSibling;
    if (!figure || !previous) { return null; }
    var images = previous.querySelectorAll("img");
    for (var index = 0; index < images.length; index++) {
      var source = images[index].getAttribute("src") || "";
      if (source.indexOf("figures/" + figure + ".png") !== -1 || source.indexOf("figures/" + figure + "-dark.png") !== -1) {
        return previous;
      }
    }
    return null;
  }

  function fail(chart, error) {
    chart.container.setAttribute("data-chart-state", "failed");
    chart.container.setAttribute("data-chart-error", String(error && error.message || error));
    chart.container.classList.remove("report-chart--drawn");
    if (chart.fallback) { chart.fallback.classList.remove("report-chart-fallback"); }
    console.error("report-charts: cannot draw chart " + chart.name + ": " + (error && error.message || error));
  }

  function embed(chart, width, dark) {
    var options = {
      renderer: "svg",
      actions: false,  // the page links the numbers as CSV; the menu would also take Material's <details> look
      tooltip: {theme: dark ? "dark" : "light"},
      config: {background: "transparent"}
    };
    if (dark) { options.theme = "dark"; }
    if (chart.result) { chart.result.finalize(); chart.result = null; }
    chart.target.textContent = "";
    return window.vegaEmbed(chart.target, sized(chart.spec, width, chart.container.clientWidth), options).then(function (result) {
      chart.result = result;
      chart.width = width;
      chart.dark = dark;
    });
  }

  // Draw (or redraw) one chart, one drawing at a time.
  function draw(chart) {
    chart.queue = (chart.queue || Promise.resolve()).catch(function () {}).then(function () { return drawNow(chart); });
    return chart.queue;
  }

  // Draw at the container's width; further passes correct the width by what the axes, legends and
  // titles actually took, so that the chart fills the column without overflowing it (a chart
  // wider than the column would be shrunk by the browser, its text with it).
  function drawNow(chart) {
    if (!document.body.contains(chart.container)) { return Promise.resolve(); }
    var dark = darkScheme();
    var width = panelWidth(chart.container);
    if (chart.result && chart.width === width && chart.dark === dark) { return Promise.resolve(); }
    // up to three corrections: wrapped titles and legends change what the axes and legends take
    function fit(panel, passes) {
      var svg = chart.target.querySelector("svg");
      var drawnWidth = svg ? parseFloat(svg.getAttribute("width")) || svg.getBoundingClientRect().width : 0;
      var spare = svg ? Math.floor(chart.container.clientWidth - drawnWidth) : 0;
      if (!svg || passes === 0 || !(spare < 0 || spare > 4) || panel + spare < MIN_WIDTH) { return Promise.resolve(); }
      return embed(chart, panel + spare, dark).then(function () { return fit(panel + spare, passes - 1); });
    }
    return embed(chart, width, dark).then(function () {
      return fit(width, 3).then(function () { chart.width = width; });
    }).then(function () {
      chart.container.classList.add("report-chart--drawn");
      chart.container.setAttribute("data-chart-state", "drawn");
      chart.container.removeAttribute("data-chart-error");
      if (chart.fallback) { chart.fallback.classList.add("report-chart-fallback"); }
    });
  }

  function start(container) {
    var link = container.querySelector("a[href]");
    var chart = {container: container, name: container.getAttribute("data-chart") || "chart", fallback: fallbackOf(container)};
    charts.push(chart);
    container.setAttribute("data-chart-state", "loading");
    if (typeof window.vegaEmbed !== "function") { fail(chart, "vega-embed did not load"); return; }
    if (!link) { fail(chart, "no link to its spec"); return; }
    chart.target = document.createElement("div");
    chart.target.className = "report-chart__view";
    container.appendChild(chart.target);
    fetch(link.href).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status + " for " + link.href); }
      return response.json();
    }).then(function (spec) {
      chart.spec = spec;
      return draw(chart);
    }).catch(function (error) { fail(chart, error); });
  }

  function redrawAll() {
    charts.forEach(function (chart) {
      if (chart.spec && document.body.contains(chart.container)) {
        draw(chart).catch(function (error) { fail(chart, error); });
      }
    });
  }

  function init() {
    charts = charts.filter(function (chart) {  // instant navigation: the previous page's charts are gone
      if (document.body.contains(chart.container)) { return true; }
      if (chart.result) { chart.result.finalize(); }
      return false;
    });
    var containers = document.querySelectorAll(SELECTOR);
    if (!containers.length) { return; }
    addStyle();
    Array.prototype.forEach.call(containers, function (container) {
      if (!container.hasAttribute("data-chart-state")) { start(container); }
    });
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(redrawAll, 200);
  });
  new MutationObserver(redrawAll).observe(document.body, {attributes: true, attributeFilter: ["data-md-color-scheme"]});

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(init);  // Material: emits for the first page and after every instant navigation
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
