// Math in notes: pymdownx.arithmatex leaves \( … \) and \[ … \] in .arithmatex elements;
// KaTeX, served by this site (assets/katex/), typesets them. KaTeX is loaded only on
// pages that have math, and with trust off, so \href and \html… commands from a note
// cannot make links or markup.
(function () {
  "use strict";
  var here = document.currentScript && document.currentScript.src;
  var katexBase = new URL("../katex/", here || location.href).href;
  var loading = null;

  function addScript(src) {
    return new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }

  function load() {
    if (!loading) {
      var css = document.createElement("link");
      css.rel = "stylesheet";
      css.href = katexBase + "katex.min.css";
      document.head.appendChild(css);
      loading = addScript(katexBase + "katex.min.js").then(function () {
        return addScript(katexBase + "auto-render.min.js");
      });
    }
    return loading;
  }

  function typeset() {
    var nodes = document.querySelectorAll(".arithmatex");
    if (!nodes.length) return;
    load().then(function () {
      nodes.forEach(function (node) {
        window.renderMathInElement(node, {
          delimiters: [
            { left: "\\(", right: "\\)", display: false },
            { left: "\\[", right: "\\]", display: true }
          ],
          throwOnError: false,
          trust: false
        });
      });
    });
  }

  if (window.document$) {
    window.document$.subscribe(typeset); // Material's page-ready stream
  } else {
    document.addEventListener("DOMContentLoaded", typeset);
  }
})();
