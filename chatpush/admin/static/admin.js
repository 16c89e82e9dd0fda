// chatpush admin console: small progressive enhancements; every page works without this script.
"use strict";
(function () {
  var serverNow = Number(document.body.getAttribute("data-server-now")) || Date.now();
  var skew = serverNow - Date.now(); // the server's clock may not be this browser's

  function relative(deltaMs) {
    var s = Math.floor(Math.abs(deltaMs) / 1000), amount;
    if (s < 60) amount = s + " s";
    else if (s < 3600) amount = Math.floor(s / 60) + " min";
    else if (s < 86400) amount = Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    else amount = Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
    return deltaMs < 0 ? "in " + amount : amount + " ago";
  }

  function refreshTimes(root) {
    var now = Date.now() + skew;
    root.querySelectorAll("time[data-ms] .ago").forEach(function (span) {
      var at = Number(span.parentNode.getAttribute("data-ms"));
      span.textContent = "(" + relative(now - at) + ")";
    });
  }
  setInterval(function () { refreshTimes(document); }, 10000);

  // "Follow": re-read the page and swap in the parts named by data-follow (same origin, GET).
  var follow = document.querySelector("[data-follow]");
  if (follow) {
    var selectors = follow.getAttribute("data-follow").split(","), timer = null;
    var tick = function () {
      fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var now = Number(doc.body.getAttribute("data-server-now"));
          if (now) skew = now - Date.now();
          selectors.forEach(function (selector) {
            var fresh = doc.querySelector(selector), stale = document.querySelector(selector);
            if (fresh && stale) stale.replaceWith(document.importNode(fresh, true));
          });
        })
        .catch(function () { /* the next tick tries again */ });
    };
    follow.addEventListener("change", function () {
      if (follow.checked && !timer) { tick(); timer = setInterval(tick, 2000); }
      if (!follow.checked && timer) { clearInterval(timer); timer = null; }
    });
  }
})();
