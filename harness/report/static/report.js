// Draws the plotly figures embedded as <script type="application/json" class="figure">.
// A figure inside a closed <details> is drawn when it is opened (plotly needs a visible size).
(function () {
  "use strict";
  var config = { displaylogo: false, responsive: true,
                 modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"] };
  function draw(el) {
    if (el.dataset.drawn) { return; }
    var fig = JSON.parse(el.textContent);
    var target = document.getElementById(el.dataset.target);
    el.dataset.drawn = "1";
    Plotly.newPlot(target, fig.data, fig.layout, Object.assign({}, config, fig.config || {})).then(function (gd) {
      gd.setAttribute("data-drawn", "1");
      if (fig.data.length && fig.data[fig.data.length - 1].type === "heatmap") {
        gd.on("plotly_click", function (ev) {
          var link = ev.points && ev.points[0] && ev.points[0].customdata;
          if (link) { window.location.href = "cells/" + encodeURIComponent(link) + ".html"; }
        });
      }
    });
  }
  function visible(el) {
    var d = el.closest("details");
    return !d || d.open;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var figs = document.querySelectorAll("script.figure");
    figs.forEach(function (el) { if (visible(el)) { draw(el); } });
    document.querySelectorAll("details").forEach(function (d) {
      d.addEventListener("toggle", function () {
        if (d.open) { d.querySelectorAll("script.figure").forEach(draw); }
      });
    });
  });
})();
