// Progressive enhancement of the dashboard: the pages work without it (forms post, links load).
(function () {
  "use strict";

  // htmx: swap error answers too (they carry the message to show), keep 204s as they are.
  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.config.responseHandling = [
        { code: "204", swap: false },
        { code: "[23]..", swap: true },
        { code: "[45]..", swap: true, error: false },
      ];
    }
  });

  // JSON textareas: checked before the form is sent; the error shows its position.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var fields = form.querySelectorAll("textarea[data-json]");
    for (var i = 0; i < fields.length; i++) {
      var area = fields[i];
      var box = area.parentNode.querySelector(".json-error") || form.querySelector(".json-error");
      try {
        JSON.parse(area.value);
        if (box) box.hidden = true;
        area.removeAttribute("aria-invalid");
      } catch (err) {
        event.preventDefault();
        event.stopImmediatePropagation();
        area.setAttribute("aria-invalid", "true");
        if (box) {
          box.textContent = "Not valid JSON: " + err.message;
          box.hidden = false;
        }
        area.focus();
        return;
      }
    }
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // Copy buttons (clipboard API where the page is a secure context, a selection otherwise).
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      try { document.execCommand("copy"); done(); } finally { area.remove(); }
    }
  });

  // A file input fills the textarea it names, so the manifest is posted as text.
  document.addEventListener("change", function (event) {
    var input = event.target;
    var target = input.getAttribute && input.getAttribute("data-fills");
    if (!target || !input.files || !input.files[0]) return;
    input.files[0].text().then(function (text) {
      document.getElementById(target).value = text;
    });
  });
})();
