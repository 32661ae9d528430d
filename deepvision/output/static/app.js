// deepvision serve: progressive enhancement of the search form.
//
// Without this file the form posts to "/" and the server renders the results. With it, choosing,
// dropping or pasting an image searches at once through POST /api/search and the grid is built
// here with the same markup as deepvision/output/web.py (keep the two in step). Data only ever
// reaches the page through textContent and attributes, never through innerHTML.
"use strict";

(() => {
  const form = document.getElementById("search");
  const input = document.getElementById("image");
  const statusLine = document.getElementById("status");
  const results = document.getElementById("results");
  const preview = document.getElementById("preview");
  const fileName = document.getElementById("file-name");
  if (!form || !input || !statusLine || !results) return;

  const k = Number.parseInt(form.dataset.k || "24", 10) || 24;
  let inFlight = null; // the AbortController of the running search
  let previewUrl = null;
  let dragDepth = 0;

  // Control characters as \xNN, as the server's safe_text shows them.
  const safeText = (text) =>
    String(text).replace(/[\u0000-\u001f\u007f-\u009f]/g,
      (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));

  const setStatus = (text, state) => {
    statusLine.textContent = safeText(text);
    statusLine.dataset.state = state;
  };

  const el = (tag, attrs = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    for (const child of children) node.append(child);
    return node;
  };

  const splitPath = (path) => {
    const cut = path.lastIndexOf("/");
    return cut < 0 ? ["", path] : [path.slice(0, cut + 1), path.slice(cut + 1)];
  };

  // A file name that wraps after _ - . rather than inside a word, as web.py writes it.
  const breakable = (name) => name.split(/(?<=[_\-.])/).flatMap(
    (part, i) => (i ? [document.createElement("wbr"), part] : [part]));

  // SVG's namespace, read from an SVG the page has (the form's icon): no URL in this file.
  const SVG = (document.querySelector("svg") || {}).namespaceURI;
  const svgEl = (tag, attrs = {}) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  };

  const fraction = (v) => (typeof v === "number" && v >= 0 && v <= 1 ? v : null);

  // x0, y0, x1, y1 in 0..1 with x0 < x1 and y0 < y1, as web.py's _box; else null.
  const boxOf = (value) => {
    if (!Array.isArray(value) || value.length !== 4) return null;
    const b = value.map(fraction);
    return b.includes(null) || !(b[0] < b[2] && b[1] < b[3]) ? null : b;
  };

  // The (x, y) at offset `at` of each [qx, qy, mx, my]: 0 the query's, 2 the match's.
  const pointsOf = (value, at) => (Array.isArray(value) ? value : [])
    .filter((p) => Array.isArray(p) && p.length === 4)
    .map((p) => [fraction(p[at]), fraction(p[at + 1])])
    .filter(([x, y]) => x !== null && y !== null);

  // The matched region and points over a picture, in fractions of its size (web.py _overlay).
  const fillOverlay = (svg, box, points) => {
    svg.replaceChildren();
    if (!box) return svg;
    const [x0, y0, x1, y1] = box;
    svg.append(svgEl("rect", {
      class: "box", x: x0.toFixed(4), y: y0.toFixed(4),
      width: (x1 - x0).toFixed(4), height: (y1 - y0).toFixed(4),
    }));
    const dots = svgEl("g", { class: "points" });
    for (const [x, y] of points) {
      dots.append(svgEl("circle", { cx: x.toFixed(4), cy: y.toFixed(4), r: "0.018" }));
    }
    svg.append(dots);
    return svg;
  };

  const overlay = (box, points) => fillOverlay(svgEl("svg", {
    class: "overlay", viewBox: "0 0 1 1", preserveAspectRatio: "none", "aria-hidden": "true",
  }), box, points);

  const picture = (match) => {
    if (!Number.isInteger(match.id)) return el("div", { class: "thumb missing" }, ["no preview"]);
    const img = el("img", {
      src: `/api/images/${match.id}/thumbnail`, alt: "", loading: "lazy",
      decoding: "async", width: 256, height: 256,
    });
    const box = boxOf(match.match_box);
    const attrs = { href: `/api/images/${match.id}`, target: "_blank", rel: "noopener" };
    if (!box) return el("a", { class: "thumb", ...attrs }, [img]);
    const frame = el("span", { class: "frame" }, [img, overlay(box, pointsOf(match.points, 2))]);
    return el("a", { class: "thumb framed", ...attrs }, [frame]);
  };

  const figure = (match) => {
    const rank = Number.isInteger(match.rank) ? match.rank : 0;
    const score = Number.isFinite(match.score) ? match.score : 0;
    const path = String(match.path ?? "");
    const [dir, name] = splitPath(path);
    const meter = el("meter", { min: 0, max: 1, value: Math.min(Math.max(score, 0), 1).toFixed(4) });
    const caption = el("figcaption", {}, [
      el("span", { class: "path", title: safeText(path) }, [
        el("span", { class: "dir" }, [el("span", {}, [safeText(dir)])]),
        el("span", { class: "name" }, breakable(safeText(name))),
      ]),
      el("span", { class: "score-row" }, [meter, el("span", { class: "score" }, [score.toFixed(4)])]),
    ]);
    const verified = match.verified === true ? "true" : match.verified === false ? "false" : "unknown";
    const children = [picture(match), el("span", { class: "rank", "aria-label": "rank" }, [String(rank)])];
    if (match.verified === true) {
      const inliers = Number.isInteger(match.inliers) ? match.inliers : 0;
      children.push(el("span", {
        class: "verified", title: `${inliers} matched points agree on one geometric transform`,
      }, ["✓ verified"]));
    }
    children.push(caption);
    const node = el("figure", {
      class: "match", "data-rank": rank, "data-score": score.toFixed(4),
      "data-match": match.match === true ? "true" : "false", "data-verified": verified,
    }, children);
    // Hovering or focusing a match shows its region (and points) on the query's preview.
    const queryBox = boxOf(match.query_box);
    if (queryBox) {
      const show = () => showQueryBox(queryBox, pointsOf(match.points, 0));
      node.addEventListener("mouseenter", show);
      node.addEventListener("focusin", show);
    }
    return node;
  };

  const queryOverlay = document.getElementById("query-overlay");
  const showQueryBox = (box, points) => {
    if (queryOverlay) fillOverlay(queryOverlay, box, points);
  };

  // The matches first, the other similar images folded below (open when nothing matched),
  // and the points toggle when there are points: the markup web.py's _grid writes.
  const grid = (matches) => {
    const copies = matches.filter((m) => m && m.match === true);
    const others = matches.filter((m) => !(m && m.match === true));
    const nodes = [];
    if (matches.some((m) => m && Array.isArray(m.points) && m.points.length)) {
      nodes.push(el("label", { class: "points-toggle" }, [
        el("input", { type: "checkbox", id: "show-points" }), " show matched points"]));
    }
    nodes.push(...copies.map(figure));
    if (others.length) {
      const n = others.length;
      const folded = el("details", { id: "similar", class: "similar" }, [
        el("summary", {}, [`${n} other similar ${n === 1 ? "image" : "images"}`]),
        el("div", { class: "grid" }, others.map(figure)),
      ]);
      folded.open = copies.length === 0;
      nodes.push(folded);
    }
    const first = matches.find((m) => m && boxOf(m.query_box));
    showQueryBox(first ? boxOf(first.query_box) : null, first ? pointsOf(first.points, 0) : []);
    return [nodes, copies.length];
  };

  const showPreview = (file) => {
    if (!preview) return;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
    const frame = document.getElementById("preview-frame");
    if (frame) frame.hidden = false;
    showQueryBox(null, []);
    form.classList.add("has-preview");
    const title = form.querySelector(".drop-title");
    if (title) title.textContent = "Choose another image";
  };

  const errorMessage = async (response) => {
    try {
      const body = await response.json();
      if (body && typeof body.message === "string" && body.message) return body.message;
      if (body && Array.isArray(body.detail)) {
        return body.detail.map((d) => d && d.msg).filter(Boolean).join("; ");
      }
      if (body && typeof body.error === "string") return `Search failed (${body.error}).`;
    } catch (_) {
      // not JSON: fall through to the HTTP status
    }
    return `Search failed (HTTP ${response.status}).`;
  };

  const search = async (file) => {
    if (!file) {
      setStatus("Choose an image first.", "error");
      return;
    }
    showPreview(file);
    if (fileName) fileName.textContent = safeText(file.name || "pasted image");
    const body = new FormData();
    body.append("image", file, file.name || "pasted image");
    await send(`/api/search?k=${k}${narrowing()}`, { method: "POST", body });
  };

  // Search by words (the text box is there only for an index whose model embeds text).
  // The filled filters (date, folder, camera, kind, order) as query parameters.
  const narrowing = () => {
    const box = document.getElementById("filters");
    if (!box) return "";
    const params = new URLSearchParams();
    for (const control of box.querySelectorAll("input, select")) {
      const value = control.value.trim();
      if (value && !(control.name === "sort" && value === "score")) params.append(control.name, value);
    }
    const text = params.toString();
    return text ? `&${text}` : "";
  };

  const searchText = async (text) => {
    if (!text.trim()) {
      setStatus("Type the words to search for.", "error");
      return;
    }
    await send(`/api/search?k=${k}&text=${encodeURIComponent(text)}${narrowing()}`,
      { method: "GET" });
  };

  const send = async (url, init) => {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    setStatus("Searching…", "busy");
    results.setAttribute("aria-busy", "true");
    form.classList.add("busy");
    const started = performance.now();
    try {
      const response = await fetch(url, {
        ...init, signal: controller.signal, credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        results.replaceChildren();
        setStatus(await errorMessage(response), "error");
        return;
      }
      render(await response.json(), performance.now() - started);
    } catch (err) {
      if (err && err.name === "AbortError") return;
      results.replaceChildren();
      setStatus("The server could not be reached; is `deepvision serve` still running?", "error");
    } finally {
      if (inFlight === controller) {
        inFlight = null;
        results.removeAttribute("aria-busy");
        form.classList.remove("busy");
      }
    }
  };

  const render = (doc, elapsed) => {
    const query = (doc && Array.isArray(doc.queries) && doc.queries[0]) || {};
    if (query.error) {
      results.replaceChildren();
      setStatus(`Could not search: ${query.error}`, "error");
      return;
    }
    const matches = Array.isArray(query.matches) ? query.matches : [];
    const [nodes, n] = grid(matches);
    results.replaceChildren(...nodes);
    const ms = Math.round(elapsed);
    const what = query.kind === "text" ? ` for “${query.query}”` : "";
    setStatus(n ? `${n} ${n === 1 ? "match" : "matches"}${what} in ${ms} ms`
      : `No matches${what} (${ms} ms)`, "done");
  };

  const firstImage = (files) =>
    Array.from(files || []).find((f) => f.type.startsWith("image/")) || null;

  // The no-JS form still posts when fetch is missing; with it, the page never reloads.
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(input.files && input.files[0]);
  });

  const textForm = document.getElementById("text-search");
  const textInput = document.getElementById("text");
  if (textForm && textInput) {
    textForm.addEventListener("submit", (event) => {
      event.preventDefault();
      searchText(textInput.value);
    });
  }

  input.addEventListener("change", () => {
    if (input.files && input.files[0]) search(input.files[0]);
  });

  const hasFiles = (event) =>
    event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");

  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault(); // a dropped file must not replace the page
    dragDepth = 0;
    document.body.classList.remove("dragging");
    const file = firstImage(event.dataTransfer && event.dataTransfer.files);
    if (file) search(file);
    else setStatus("Drop an image file (JPEG, PNG, WebP, …).", "error");
  });

  document.addEventListener("paste", (event) => {
    const items = Array.from((event.clipboardData && event.clipboardData.items) || []);
    const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    const file = item && item.getAsFile();
    if (!file) return; // pasting text stays pasting text
    event.preventDefault();
    search(file);
  });

  document.documentElement.classList.add("js");
})();
