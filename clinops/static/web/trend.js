// The BP trend chart (vendored uPlot, no build step): wearable estimates as hourly means with
// their interval, cuff readings as dots, the target and dose changes. Data comes from the page's
// "trend-data" JSON; the time axis spans the whole period the caption names and reads in the
// clinic's time zone (data.tz) on a 24-hour clock, like the text of the page.
(function () {
  function formatter(tz, withTime) {
    var opts = { timeZone: tz, day: "numeric", month: "short" };
    if (withTime) { opts.hour = "2-digit"; opts.minute = "2-digit"; opts.hourCycle = "h23"; }
    var f = new Intl.DateTimeFormat("en-GB", opts);
    return function (seconds) { return f.format(new Date(seconds * 1000)); };
  }

  function draw() {
    var el = document.getElementById("trend");
    var data = JSON.parse(document.getElementById("trend-data").textContent);
    if (!el || typeof uPlot === "undefined") return;
    if (!data.t.length && !data.cuff.length) { el.textContent = "No readings in the last 30 days."; return; }
    var clinician = el.dataset.clinician === "1";
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
    var band = function (label, color) {
      return { label: label, stroke: color, width: 0.5, dash: [2, 3], spanGaps: true, show: clinician };
    };
    // Dots only: no line between readings and no fill (a fill drew solid areas under them).
    var dots = function (label, color) {
      return { label: label, stroke: color, width: 0, paths: function () { return null; },
               points: { show: true, size: 8, fill: color, stroke: color } };
    };
    var dayAndTime = formatter(data.tz || "UTC", true), dayOnly = formatter(data.tz || "UTC", false);
    var target = data.target;
    var opts = {
      width: el.clientWidth || 320, height: 260,
      legend: { show: clinician },
      scales: { x: { time: true, range: [data.since, data.until] }, y: { range: [50, 200] } },
      axes: [{ values: function (u, splits) {
                 var span = (u.scales.x.max - u.scales.x.min) / 86400;
                 return splits.map(function (s) { return span > 3 ? dayOnly(s) : dayAndTime(s); });
               }, space: 70 },
             { label: "mmHg" }],
      series: [{ label: "Time", value: function (u, v) { return v == null ? "—" : dayAndTime(v); } },
        { label: clinician ? "SBP estimate" : "Upper (systolic)", stroke: "#b3261e", width: 1.5, spanGaps: true },
        { label: clinician ? "DBP estimate" : "Lower (diastolic)", stroke: "#1f5fbf", width: 1.5, spanGaps: true },
        band("SBP interval low", "#b3261e"), band("SBP interval high", "#b3261e"),
        band("DBP interval low", "#1f5fbf"), band("DBP interval high", "#1f5fbf"),
        dots(clinician ? "Cuff SBP" : "Cuff upper", "#7a1a14"), dots(clinician ? "Cuff DBP" : "Cuff lower", "#123b78")],
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
