// The site's Korean search (docs/dev/search.md). The index is built by digest/search.py:
//   search/manifest.json      shard count, which shards exist, the particles to strip
//   search/terms/<n>.json     term → [doc gap, weight, doc gap, weight, …]; a term lives in
//                             shard (code point of its first character) % shards
//   search/docs/<n>.json      [url, title, date, kind] of 200 notes each
// A query word the index does not know loses a particle or ending ("카패시의" → "카패시")
// when what is left is a term of the index, and otherwise matches terms by prefix.
// Snippets come from the result pages themselves, fetched for the first results only.
(function () {
  "use strict";

  var root = document.querySelector("[data-digest-search]");
  if (!root) return;
  var input = root.querySelector("[data-digest-search-query]");
  var result = root.querySelector("[data-digest-search-result]");
  var meta = result.querySelector(".md-search-result__meta");
  var list = result.querySelector(".md-search-result__list");
  var toggle = document.getElementById("__search");
  var indexBase = new URL(root.getAttribute("data-index"), location.href).href;
  var siteBase = new URL(root.getAttribute("data-base"), location.href).href;
  var SHOWN = 10; // results with a snippet; the rest on "more"
  var HANGUL = /^[가-힣]+$/;

  var cache = { manifest: null, shards: {}, chunks: {}, pages: {} };
  var current = 0; // the latest query's number: older ones stop rendering

  function getJSON(url) {
    return fetch(url).then(function (response) {
      if (!response.ok) throw new Error(url + ": " + response.status);
      return response.json();
    });
  }

  function manifest() {
    if (!cache.manifest) cache.manifest = getJSON(indexBase + "manifest.json");
    return cache.manifest;
  }

  function shard(m, term) {
    var n = term.codePointAt(0) % m.shards;
    if (m.present.indexOf(n) < 0) return Promise.resolve({});
    if (!cache.shards[n]) cache.shards[n] = getJSON(indexBase + "terms/" + n + ".json");
    return cache.shards[n];
  }

  function chunk(m, doc) {
    var n = Math.floor(doc / m.docs_per_chunk);
    if (!cache.chunks[n]) cache.chunks[n] = getJSON(indexBase + "docs/" + n + ".json");
    return cache.chunks[n].then(function (entries) { return entries[doc % m.docs_per_chunk]; });
  }

  // "Karpathy의 역전파" → ["karpathy", "역전파"]: words split where Hangul meets Latin,
  // Latin lower-cased, and a particle glued to a Latin word dropped.
  function keys(query, particles) {
    var out = [];
    query.trim().split(/\s+/).forEach(function (word) {
      var pieces = word.match(/[가-힣]+|[A-Za-z][A-Za-z0-9]*|[0-9]+/g) || [];
      pieces.forEach(function (piece, i) {
        if (HANGUL.test(piece) && i > 0 && !HANGUL.test(pieces[i - 1]) && particles.indexOf(piece) >= 0) return;
        out.push(HANGUL.test(piece) ? piece : piece.toLowerCase());
      });
    });
    return out.filter(function (key, i) { return out.indexOf(key) === i; });
  }

  function has(terms, term) {
    return Object.prototype.hasOwnProperty.call(terms, term); // "constructor" is a word too
  }

  function withPrefix(terms, prefix) {
    return Object.keys(terms).filter(function (t) { return t.lastIndexOf(prefix, 0) === 0; }).slice(0, 64);
  }

  // The index terms a query key stands for, and the text to highlight.
  function resolve(m, key) {
    return shard(m, key).then(function (terms) {
      if (has(terms, key)) return { terms: [key], mark: key };
      var stripped = m.particles
        .filter(function (p) { return key.length > p.length && key.slice(-p.length) === p; })
        .map(function (p) { return key.slice(0, -p.length); });
      var i, found;
      for (i = 0; i < stripped.length; i++) {
        if (stripped[i].length >= 2 && has(terms, stripped[i])) return { terms: [stripped[i]], mark: stripped[i] };
      }
      found = withPrefix(terms, key);
      if (found.length) return { terms: found, mark: key };
      for (i = 0; i < stripped.length; i++) {
        if (has(terms, stripped[i])) return { terms: [stripped[i]], mark: stripped[i] };
      }
      for (i = 0; i < stripped.length; i++) {
        found = stripped[i].length >= 2 ? withPrefix(terms, stripped[i]) : [];
        if (found.length) return { terms: found, mark: stripped[i] };
      }
      return null;
    }).then(function (hit) {
      if (!hit) return null;
      return shard(m, key).then(function (terms) {
        var weights = {};
        hit.terms.forEach(function (term) {
          var values = terms[term], doc = 0;
          for (var j = 0; j < values.length; j += 2) {
            doc += values[j];
            weights[doc] = Math.max(weights[doc] || 0, values[j + 1]);
          }
        });
        return { mark: hit.mark, weights: weights };
      });
    });
  }

  // Every key must match (AND); score is the sum of weights, newer notes first on ties.
  function rank(hits) {
    var docs = Object.keys(hits[0].weights);
    var scored = [];
    docs.forEach(function (doc) {
      var score = 0;
      for (var i = 0; i < hits.length; i++) {
        var w = hits[i].weights[doc];
        if (!w) return;
        score += w;
      }
      scored.push([Number(doc), score]);
    });
    scored.sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
    return scored.map(function (pair) { return pair[0]; });
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  // Text with every mark wrapped in <mark>, built as DOM nodes (never as HTML).
  function highlighted(element, text, marks) {
    var pattern = new RegExp(marks.map(escapeRegExp).sort(function (a, b) { return b.length - a.length; }).join("|"), "gi");
    var last = 0, match;
    while ((match = pattern.exec(text)) !== null) {
      element.appendChild(document.createTextNode(text.slice(last, match.index)));
      var mark = document.createElement("mark");
      mark.textContent = match[0];
      element.appendChild(mark);
      last = match.index + match[0].length;
      if (match[0].length === 0) pattern.lastIndex++;
    }
    element.appendChild(document.createTextNode(text.slice(last)));
    return element;
  }

  function pageText(url) {
    if (!cache.pages[url]) {
      cache.pages[url] = fetch(url).then(function (r) { return r.ok ? r.text() : ""; }).then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var article = doc.querySelector("article.md-content__inner");
        if (!article) return "";
        article.querySelectorAll(".digest-note__nav, .digest-note__edit, .headerlink")
          .forEach(function (node) { node.remove(); });
        // The body first, the header (title, names, tags, summary) after: a snippet
        // from the body says more than the title the result already shows.
        var header = article.querySelector(".digest-note__header");
        var head = header ? header.textContent : "";
        if (header) header.remove();
        return (article.textContent + " " + head).replace(/\s+/g, " ").trim();
      }).catch(function () { return ""; });
    }
    return cache.pages[url];
  }

  function snippet(text, marks) {
    var lower = text.toLowerCase(), at = -1;
    marks.forEach(function (mark) {
      var i = lower.indexOf(mark.toLowerCase());
      if (i >= 0 && (at < 0 || i < at)) at = i;
    });
    if (at < 0) return text.slice(0, 120);
    var start = Math.max(0, at - 50);
    return (start > 0 ? "… " : "") + text.slice(start, at + 110) + " …";
  }

  function item(entry, marks) {
    var li = document.createElement("li");
    li.className = "md-search-result__item";
    var a = document.createElement("a");
    a.className = "md-search-result__link";
    a.href = siteBase + entry[0];
    a.tabIndex = -1;
    var article = document.createElement("article");
    article.className = "md-search-result__article md-typeset";
    var icon = document.createElement("div");
    icon.className = "md-search-result__icon md-icon";
    article.appendChild(icon);
    article.appendChild(highlighted(document.createElement("h1"), entry[1], marks));
    var info = document.createElement("p");
    info.className = "digest-search__info";
    info.textContent = entry[2] + " · " + entry[3];
    article.appendChild(info);
    var text = document.createElement("p");
    text.className = "digest-search__snippet";
    article.appendChild(text);
    a.appendChild(article);
    li.appendChild(a);
    return { li: li, snippet: text, url: a.href };
  }

  function show(number, query, docs, marks, m, limit) {
    var shown = docs.slice(0, limit);
    return Promise.all(shown.map(function (doc) { return chunk(m, doc); })).then(function (entries) {
      if (number !== current) return;
      list.textContent = "";
      meta.textContent = docs.length ? docs.length + "개의 노트" : "검색어와 일치하는 노트가 없습니다";
      var pending = entries.map(function (entry) {
        var it = item(entry, marks);
        list.appendChild(it.li);
        return pageText(it.url).then(function (text) {
          if (number === current && text) highlighted(it.snippet, snippet(text, marks), marks);
        });
      });
      if (docs.length > limit) {
        var more = document.createElement("li");
        more.className = "md-search-result__item digest-search__more";
        var button = document.createElement("button");
        button.type = "button";
        button.className = "md-button";
        button.textContent = "결과 더 보기 (" + (docs.length - limit) + "개)";
        button.addEventListener("click", function () {
          result.setAttribute("data-state", "busy");
          show(number, query, docs, marks, m, limit + SHOWN);
        });
        more.appendChild(button);
        list.appendChild(more);
      }
      return Promise.all(pending).then(function () { done(number, query); });
    });
  }

  function done(number, query) {
    if (number !== current) return;
    result.setAttribute("data-query", query);
    result.setAttribute("data-state", "done");
  }

  function search(query) {
    var number = ++current;
    result.setAttribute("data-state", "busy");
    if (!query.trim()) {
      list.textContent = "";
      meta.textContent = "검색어를 입력하세요";
      done(number, query);
      return;
    }
    manifest().then(function (m) {
      var wanted = keys(query, m.particles);
      if (!wanted.length) return show(number, query, [], [], m, SHOWN);
      return Promise.all(wanted.map(function (key) { return resolve(m, key); })).then(function (hits) {
        if (hits.some(function (hit) { return !hit; })) return show(number, query, [], [], m, SHOWN);
        var marks = hits.map(function (hit) { return hit.mark; });
        return show(number, query, rank(hits), marks, m, SHOWN);
      });
    }).catch(function (error) {
      if (number !== current) return;
      list.textContent = "";
      meta.textContent = "검색 색인을 읽지 못했습니다";
      done(number, query);
      if (window.console) console.warn(error);
    });
  }

  var timer = null;
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { search(input.value); }, 120);
  });
  input.addEventListener("focus", function () {
    if (toggle && !toggle.checked) toggle.checked = true;
  });
  input.form.addEventListener("submit", function (event) {
    event.preventDefault();
    search(input.value);
  });
  input.form.addEventListener("reset", function () {
    setTimeout(function () { search(""); input.focus(); }, 0);
  });
  if (toggle) {
    toggle.addEventListener("change", function () {
      if (toggle.checked) input.focus();
    });
  }
  document.addEventListener("keydown", function (event) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement && document.activeElement.tagName);
    if (event.key === "Escape" && document.activeElement === input) {
      if (toggle) toggle.checked = false;
      input.blur();
    } else if (event.key === "/" && !typing) {
      event.preventDefault();
      if (toggle) toggle.checked = true;
      input.focus();
    }
  });
})();
