// Draws every <canvas data-chart="ID"> from the JSON config in <script type="application/json" id="ID">,
// and keeps the lambda slider's read-out in step. No inline scripts: the console's CSP forbids them.
(function () {
  "use strict";
  const palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];

  function draw() {
    Chart.defaults.animation = false;  // the figures are read, not watched: draw them at once
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      const source = document.getElementById(canvas.dataset.chart);
      if (!source) { return; }
      const config = JSON.parse(source.textContent);
      config.data.datasets.forEach(function (dataset, i) {
        if (!dataset.backgroundColor) {
          dataset.borderColor = palette[i % palette.length];
          dataset.backgroundColor = palette[i % palette.length] + (dataset.fill ? "99" : "");
        }
      });
      config.options = config.options || {};
      config.options.maintainAspectRatio = false;
      if (config.data.datasets[0] && config.data.datasets[0].support) {
        const support = config.data.datasets[0].support;
        config.options.plugins = config.options.plugins || {};
        config.options.plugins.tooltip = {
          callbacks: {
            afterLabel: function (item) { return "support " + Number(support[item.dataIndex]).toFixed(1); }
          }
        };
      }
      new Chart(canvas, config);
    });
  }

  function slider() {
    const range = document.getElementById("lambda");
    const value = document.getElementById("lambda-value");
    const mode = document.getElementById("mode-lambda");
    if (!range || !value) { return; }
    range.addEventListener("input", function () {
      value.textContent = range.value;
      if (mode) { mode.checked = true; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(); slider(); });
})();
