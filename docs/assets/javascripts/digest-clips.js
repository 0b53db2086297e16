// Animated figures (a reference's game clip, an animated GIF) loop for as long as the page is open.
// Anything that moves for more than five seconds should be pausable (WCAG 2.2.2), and a GIF has no
// controls: each one gets a button that stops it, showing its first frame (what a canvas draws of an
// animated image) in its place, and starts it again. Readers whose system asks for reduced motion
// get it paused at first.
(function () {
  "use strict";

  function freeze(img, canvas) {
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    canvas.getContext("2d").drawImage(img, 0, 0);
  }

  function control(img, startPaused) {
    var clip = document.createElement("span");
    var canvas = document.createElement("canvas");
    var button = document.createElement("button");
    clip.className = "digest-clip";
    canvas.className = img.className;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", img.alt);
    canvas.hidden = true;
    button.type = "button";
    button.className = "digest-clip__toggle";
    img.parentNode.insertBefore(clip, img);
    clip.appendChild(img);
    clip.appendChild(canvas);
    clip.appendChild(button);

    function show(playing) {
      if (!playing) freeze(img, canvas);
      img.hidden = !playing;
      canvas.hidden = playing;
      button.textContent = playing ? "❚❚ 멈춤" : "▶ 재생";
      button.setAttribute("aria-label", (playing ? "움직이는 그림 멈추기: " : "움직이는 그림 재생: ") + img.alt);
      button.setAttribute("aria-pressed", String(!playing));
    }

    button.addEventListener("click", function () { show(!canvas.hidden); });
    show(true);
    if (startPaused) {
      img.loading = "eager";  // a lazy image that is never shown would never load, so never freeze
      if (img.complete && img.naturalWidth) show(false);
      else img.addEventListener("load", function () { show(false); }, { once: true });
    }
  }

  function init() {
    var reduce = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    var clips = document.querySelectorAll('.md-typeset img.ref-figure[src$=".gif"]');
    for (var i = 0; i < clips.length; i++) control(clips[i], reduce);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
