// The BP trend chart (vendored uPlot, no build step): estimates with their interval, cuff
// readings, the target band and dose changes. Data comes from the page's "trend-data" JSON.
(function () {
  function draw() {
    var el = document.getElementById("trend");
    var data = JSON.parse(document.getElementById("trend-data").textContent);
    if (!el || typeof uPlot === "undefined") return;
    if (!data.t.length && !data.cuff.length) { el.textContent = "No readings in the last 30 days."; return; }
    // Cuff readings share the time axis: merge their times in, with gaps elsewhere.
    var times = data.t.concat(data.cuff.map(function (c) { return c[0]; }));
    var order = times.map(function (t, i) { return i; }).sort(function (a, b) { return times[a] - times[b]; });
    var n = data.t.length, cols = [[], [], [], [], [], [], [], [], []];
    order.forEach(function (i) {
      var est = i < n, c = est ? null : data.cuff[i - n];
      cols[0].push(times[i]);
      cols[1].push(est ? data.sbp[i] : null); cols[2].push(est ? data.dbp[i] : null);
      cols[3].push(est ? data.sbp_low[i] : null); cols[4].push(est ? data.sbp_high[i] : null);
      cols[5].push(est ? data.dbp_low[i] : null); cols[6].push(est ? data.dbp_high[i] : null);
      cols[7].push(est ? null : c[1]); cols[8].push(est ? null : c[2]);
    });
    var band = function (color) { return { stroke: color, width: 0.5, dash: [2, 3] }; };
    var dot = function (color) { return { stroke: color, fill: color, width: 0, points: { show: true, size: 8, fill: color } }; };
    var target = data.target;
    var opts = {
      width: el.clientWidth || 320, height: 260,
      scales: { y: { range: [50, 200] } },
      series: [{}, { label: "SBP", stroke: "#b3261e", width: 1.5, spanGaps: true },
        { label: "DBP", stroke: "#1f5fbf", width: 1.5, spanGaps: true },
        Object.assign({ label: "SBP low", spanGaps: true }, band("#b3261e")), Object.assign({ label: "SBP high", spanGaps: true }, band("#b3261e")),
        Object.assign({ label: "DBP low", spanGaps: true }, band("#1f5fbf")), Object.assign({ label: "DBP high", spanGaps: true }, band("#1f5fbf")),
        Object.assign({ label: "Cuff SBP" }, dot("#7a1a14")), Object.assign({ label: "Cuff DBP" }, dot("#123b78"))],
      hooks: { draw: [function (u) {
        var ctx = u.ctx; ctx.save();
        if (target) {
          ctx.setLineDash([6, 4]); ctx.strokeStyle = "#1e7b3a"; ctx.lineWidth = 1;
          target.forEach(function (v) { var y = u.valToPos(v, "y", true); ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke(); });
        }
        ctx.setLineDash([]); ctx.strokeStyle = "#6a4c93"; ctx.lineWidth = 2;
        (data.rung_changes || []).forEach(function (c) {
          var x = u.valToPos(c.t, "x", true);
          if (x >= u.bbox.left && x <= u.bbox.left + u.bbox.width) { ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke(); }
        });
        ctx.restore();
      }] },
    };
    el.textContent = "";
    new uPlot(opts, cols, el);
    el.dataset.ready = "1";
  }
  if (document.readyState === "complete") draw(); else window.addEventListener("load", draw);
})();
