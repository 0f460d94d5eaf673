// Weekly MAE per model version on the model-health page (vendored uPlot).
(function () {
  function draw() {
    var el = document.getElementById("mae-chart"), src = document.getElementById("mae-data");
    if (!el || !src || typeof uPlot === "undefined") return;
    var data = JSON.parse(src.textContent);
    var x = data.weeks.map(function (w, i) { return i; });
    var colors = ["#b3261e", "#1f5fbf", "#7a1a14", "#123b78", "#6a4c93", "#1e7b3a"];
    var series = [{ label: "week", value: function (u, v) { return v == null ? "" : data.weeks[v]; } }].concat(
      data.series.map(function (s, i) { return { label: s.label, stroke: colors[i % colors.length], width: 2, spanGaps: true, points: { show: true } }; }));
    new uPlot({ width: el.clientWidth || 320, height: 220, series: series,
      scales: { x: { time: false } },
      axes: [{ values: function (u, ticks) { return ticks.map(function (t) { return data.weeks[t] || ""; }); } }, { label: "MAE (mmHg)" }] },
      [x].concat(data.series.map(function (s) { return s.values; })), el);
    el.dataset.ready = "1";
  }
  if (document.readyState === "complete") draw(); else window.addEventListener("load", draw);
})();
