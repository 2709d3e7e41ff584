// Draws the plotly figures embedded as <script type="application/json" class="figure">.
// The scripts sit at the end of <body>; the element they draw into (data-target) may sit in a
// closed <details> (repetitions after the first): such a figure is drawn when its <details> is
// opened, because plotly sizes a figure from its container, which has no width while hidden.
(function () {
  "use strict";
  var config = { displaylogo: false, responsive: true,
                 modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"] };
  function target(el) { return document.getElementById(el.dataset.target); }
  function draw(el) {
    var gd = target(el);
    if (el.dataset.drawn || !gd) { return; }
    var fig = JSON.parse(el.textContent);
    el.dataset.drawn = "1";
    Plotly.newPlot(gd, fig.data, fig.layout, Object.assign({}, config, fig.config || {})).then(function (gd) {
      gd.setAttribute("data-drawn", "1");
      if (fig.data.length && fig.data[fig.data.length - 1].type === "heatmap") {
        gd.on("plotly_click", function (ev) {
          var link = ev.points && ev.points[0] && ev.points[0].customdata;
          if (link) { window.location.href = "cells/" + encodeURIComponent(link) + ".html"; }
        });
      }
    });
  }
  function shown(el) {
    var gd = target(el);
    for (var d = gd && gd.closest("details"); d; d = d.parentElement && d.parentElement.closest("details")) {
      if (!d.open) { return false; }
    }
    return !!gd;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var figs = Array.prototype.slice.call(document.querySelectorAll("script.figure"));
    figs.forEach(function (el) { if (shown(el)) { draw(el); } });
    document.querySelectorAll("details").forEach(function (d) {
      d.addEventListener("toggle", function () {
        if (!d.open) { return; }
        figs.forEach(function (el) {
          var gd = target(el);
          if (!gd || !d.contains(gd) || !shown(el)) { return; }
          if (el.dataset.drawn) { Plotly.Plots.resize(gd); } else { draw(el); }
        });
      });
    });
  });
})();
