/* Small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  // Move focus to the error summary so screen-reader users hear what to fix first.
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }

  // A summary link focuses its field and scrolls its whole question (label or legend, hint and
  // error) into view; a plain jump to the field would hide the question above the screen's top.
  if (summary) {
    summary.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest("a[href^='#']") : null;
      var target = link ? document.getElementById(link.getAttribute("href").slice(1)) : null;
      if (!target || typeof target.focus !== "function") { return; }
      event.preventDefault();
      (target.closest(".field") || target).scrollIntoView();
      target.focus({ preventScroll: true });
    });
  }

  // Show optional follow-up questions only when their answer applies (always shown without JS).
  function revealer(panel) {
    var name = panel.getAttribute("data-reveal-when");
    var wanted = panel.getAttribute("data-reveal-value");
    var form = panel.closest("form");
    if (!form) { return; }
    function current() {
      var field = form.elements[name];
      if (!field) { return ""; }
      if (field.tagName === "SELECT") { return field.value; }
      var checked = form.querySelector("input[name='" + name + "']:checked");
      return checked ? checked.value : "";
    }
    function update() {
      var show = current() === wanted || panel.classList.contains("field--error") ||
        panel.querySelector(".field--error") !== null;
      panel.hidden = !show;
    }
    form.addEventListener("change", update);
    update();
  }
  var panels = document.querySelectorAll("[data-reveal-when]");
  for (var i = 0; i < panels.length; i++) { revealer(panels[i]); }

  // A print button where printing is possible.
  var print = document.querySelector("[data-print]");
  if (print && window.print) {
    print.hidden = false;
    print.addEventListener("click", function () { window.print(); });
  }
})();
