// Counts down every element with data-countdown (an ISO time). The server
// already wrote "expires in 42 minutes"; this only keeps it fresh. Pages work
// without it.
(function () {
  "use strict";

  function format(ms) {
    var s = Math.floor(ms / 1000);
    var d = Math.floor(s / 86400);
    var h = Math.floor((s % 86400) / 3600);
    var m = Math.floor((s % 3600) / 60);
    var sec = s % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + (sec < 10 ? "0" : "") + sec + "s";
    return sec + "s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var end = Date.parse(el.getAttribute("data-countdown"));
      if (isNaN(end)) return;
      var left = end - now;
      if (left > 0) {
        el.textContent = (el.getAttribute("data-prefix") || "") + format(left);
      } else {
        el.textContent = el.getAttribute("data-done") || "ended";
        el.classList.add("ended");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!document.querySelector("[data-countdown]")) return;
    tick();
    window.setInterval(tick, 1000);
  });
})();
