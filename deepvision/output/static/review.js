// deepvision serve: the duplicate review page (/review).
//
// Pages through GET /api/dupes, records decisions with POST /api/dupes/{id}/decision (the store
// `deepvision dupes decide` writes), takes the last one back with POST /api/dupes/undo, and
// applies them only through POST /api/dupes/apply: a dry run first, whose list is shown, then
// the same plan carried out. Data reaches the page through textContent and attributes only.
"use strict";

(() => {
  const main = document.getElementById("review");
  const groupsBox = document.getElementById("groups");
  const statusLine = document.getElementById("review-status");
  if (!main || !groupsBox || !statusLine) return;

  const limit = Number.parseInt(main.dataset.page || "20", 10) || 20;
  const pager = document.getElementById("pager");
  const showAll = document.getElementById("show-all");
  let offset = 0;
  let total = 0;
  let groups = []; // this page's groups, as the API gave them
  let current = 0; // the group the keyboard acts on
  let refresh = null; // the timer that asks again while the server updates the groups

  const safeText = (text) =>
    String(text).replace(/[\u0000-\u001f\u007f-\u009f]/g,
      (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));

  const el = (tag, attrs = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    for (const child of children) node.append(typeof child === "string" ? safeText(child) : child);
    return node;
  };

  const setStatus = (line, text, state) => {
    line.textContent = safeText(text);
    line.dataset.state = state;
  };

  // JSON to and from the API; an error answer becomes an Error with the server's message.
  const api = async (method, url, body) => {
    const init = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const doc = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(doc.message || `the server answered ${response.status}`);
      error.reason = doc.error;
      throw error;
    }
    return doc;
  };

  const size = (bytes) => {
    if (typeof bytes !== "number") return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let n = bytes;
    let u = 0;
    while (n >= 1000 && u < units.length - 1) { n /= 1000; u += 1; }
    return `${u ? n.toFixed(1) : n} ${units[u]}`;
  };

  const date = (ns) => (typeof ns === "number"
    ? new Date(ns / 1e6).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "");

  const splitPath = (path) => {
    const cut = path.lastIndexOf("/");
    return cut < 0 ? ["", path] : [path.slice(0, cut + 1), path.slice(cut + 1)];
  };

  const fraction = (v) => (typeof v === "number" && v >= 0 && v <= 1 ? v : null);
  const boxOf = (value) => {
    if (!Array.isArray(value) || value.length !== 4) return null;
    const b = value.map(fraction);
    return b.includes(null) || !(b[0] < b[2] && b[1] < b[3]) ? null : b;
  };

  // The matched region over the thumbnail: a box positioned in percentages (CSSOM, which the
  // CSP allows, unlike a style attribute).
  const region = (box) => {
    const mark = el("span", { class: "region", title: "the part that matches the first file" });
    mark.style.left = `${box[0] * 100}%`;
    mark.style.top = `${box[1] * 100}%`;
    mark.style.width = `${(box[2] - box[0]) * 100}%`;
    mark.style.height = `${(box[3] - box[1]) * 100}%`;
    return mark;
  };

  const member = (group, file, i) => {
    const [folder, name] = splitPath(file.path);
    const frame = el("span", { class: "frame" });
    if (Number.isInteger(file.file_id)) {
      frame.append(el("img", {
        src: `/api/images/${file.file_id}/thumbnail`, alt: name, loading: "lazy",
        decoding: "async",
      }));
    }
    const box = boxOf(file.region);
    if (box) frame.append(region(box));
    const facts = [size(file.size), file.width && file.height ? `${file.width}×${file.height}` : ""]
      .filter(Boolean).join(" · ");
    const badges = el("span", { class: "badges" }, [el("span", { class: `tier ${file.kind}` },
      [i === 0 ? "first" : file.kind])]);
    if (file.path === group.keeper) {
      badges.append(el("span", { class: "keeper" },
        [group.state === "resolved" ? "kept" : "proposed keeper"]));
    }
    if ((group.new_members || []).includes(file.path)) {
      badges.append(el("span", { class: "new" }, ["new since the decision"]));
    }
    const keep = el("button", { type: "button", class: "keep", "data-member": i },
      [i < 9 ? `Keep ${i + 1}` : "Keep"]);
    keep.addEventListener("click", () => decide(group, { verdict: "keep", keep: [file.path] }));
    // One member is not a copy of the others: out of the group, the rest still to decide.
    const out = el("button", { type: "button", class: "take-out",
      title: "not a duplicate of the others: take it out of the group" }, ["Not a copy"]);
    out.addEventListener("click", () => takeOut(group, file));
    return el("figure", { class: "member", "data-path": file.path }, [
      el("span", { class: "number", "aria-hidden": "true" }, [String(i + 1)]), frame,
      el("figcaption", {}, [el("span", { class: "name", title: file.path }, [name]),
        el("span", { class: "folder" }, [folder]), el("span", { class: "meta-line" }, [facts]),
        el("span", { class: "meta-line" }, [date(file.mtime_ns)]), badges]),
      el("span", { class: "member-actions" }, [keep, out])]);
  };

  const groupCard = (group, i) => {
    const not = el("button", { type: "button", class: "not-duplicates" }, ["Not duplicates"]);
    not.addEventListener("click", () => decide(group, { verdict: "not-duplicates" }));
    const later = el("button", { type: "button", class: "later" }, ["Later"]);
    later.addEventListener("click", () => decide(group, { verdict: "later" }));
    const card = el("section", {
      class: "group", id: `group-${group.id}`, "data-id": group.id, "data-state": group.state,
      tabindex: "-1", "aria-label": `group ${offset + i + 1}`,
    }, [
      el("h3", {}, [`Group ${offset + i + 1}`, " ",
        el("span", { class: `tier ${group.tier}` }, [group.tier]), " ",
        el("span", { class: "state" }, [group.state]), " ",
        el("span", { class: "count" }, [`${group.size} files`])]),
      el("div", { class: "members" }, group.files.map((f, j) => member(group, f, j))),
      el("div", { class: "group-actions" }, [not, later]),
    ]);
    card.addEventListener("click", () => focusGroup(i, false));
    return card;
  };

  const focusGroup = (i, scroll = true) => {
    const cards = groupsBox.querySelectorAll("section.group");
    if (!cards.length) return;
    current = Math.max(0, Math.min(i, cards.length - 1));
    cards.forEach((c, j) => c.classList.toggle("current", j === current));
    if (scroll) {
      cards[current].focus({ preventScroll: true });
      cards[current].scrollIntoView({ block: "nearest" });
    }
  };

  const load = async (focusId) => {
    setStatus(statusLine, "Loading the groups…", "busy");
    try {
      const all = showAll && showAll.checked ? "&all=true" : "";
      const doc = await api("GET", `/api/dupes?offset=${offset}&limit=${limit}${all}`);
      groups = doc.groups;
      total = doc.total;
      if (!groups.length && offset > 0 && total > 0) {
        offset = Math.max(0, Math.floor((total - 1) / limit) * limit);
        return load(focusId);
      }
      groupsBox.replaceChildren(...groups.map(groupCard));
      const hidden = doc.hidden ? ` (${doc.hidden} resolved hidden)` : "";
      const updating = doc.updating ? "; the index changed, updating the groups…" : "";
      setStatus(statusLine, (total ? `${total} groups of duplicates${hidden}`
        : `No groups left to review${hidden}.`) + updating, "done");
      clearTimeout(refresh);
      if (doc.updating) {
        refresh = setTimeout(() => load(groups[current] && groups[current].id), 3000);
      }
      if (pager) {
        pager.hidden = total <= limit;
        document.getElementById("page-info").textContent =
          `${offset + 1}–${offset + groups.length} of ${total}`;
        document.getElementById("prev").disabled = offset === 0;
        document.getElementById("next").disabled = offset + limit >= total;
      }
      const at = groups.findIndex((g) => g.id === focusId);
      focusGroup(at >= 0 ? at : 0);
    } catch (error) {
      setStatus(statusLine, error.message, "error");
    }
  };

  const decided = (group, doc) => {
    const card = document.getElementById(`group-${group.id}`);
    if (!card) return;
    const state = doc.verdict === "later" ? "later" : "resolved";
    card.dataset.state = state;
    const [, kept] = splitPath(doc.kept[0] || "");
    card.querySelector(".state").textContent = doc.verdict === "keep"
      ? `keep ${safeText(kept)}` : doc.verdict;
  };

  // Requests go one after another, in the order of the keys pressed: the keyboard moves on to
  // the next group at once, so fast typing decides group after group and loses no key.
  let queue = Promise.resolve();
  const queued = (work) => {
    queue = queue.then(work, work);
    return queue;
  };

  const decide = (group, body) => {
    const i = groups.indexOf(group);
    if (i >= 0) focusGroup(i + 1);
    return queued(async () => {
      try {
        const doc = await api("POST", `/api/dupes/${group.id}/decision`, body);
        decided(group, doc);
        setStatus(statusLine, `Group ${group.id}: ${doc.verdict}` +
          (doc.kept.length ? ` ${splitPath(doc.kept[0])[1]}` : "") + " (u undoes)", "done");
      } catch (error) {
        setStatus(statusLine, `Group ${group.id}: ${error.message}`, "error");
        if (i >= 0) focusGroup(i);
      }
    });
  };

  const takeOut = (group, file) => queued(async () => {
    try {
      await api("POST", `/api/dupes/${group.id}/decision`,
        { verdict: "not-duplicates", member: file.path });
      await load(group.id); // the group without it (or gone, when one file was left)
      setStatus(statusLine, `${splitPath(file.path)[1]} taken out of group ${group.id}`
        + " (u undoes)", "done");
    } catch (error) {
      setStatus(statusLine, `Group ${group.id}: ${error.message}`, "error");
    }
  });

  const undo = () => queued(async () => {
    try {
      const doc = await api("POST", "/api/dupes/undo");
      if (!doc.undone) {
        setStatus(statusLine, "No decision to undo.", "done");
        return;
      }
      await load(doc.undone.id);
      setStatus(statusLine, `Undone: group ${doc.undone.id}, ${doc.undone.verdict}`, "done");
    } catch (error) {
      setStatus(statusLine, error.message, "error");
    }
  });

  const typing = (target) => target instanceof HTMLElement
    && (target.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName));

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const group = groups[current];
    const key = event.key;
    if (/^[1-9]$/.test(key) && group) {
      const file = group.files[Number(key) - 1];
      if (file) decide(group, { verdict: "keep", keep: [file.path] });
    } else if (key === "n" && group) {
      decide(group, { verdict: "not-duplicates" });
    } else if (key === "l" && group) {
      decide(group, { verdict: "later" });
    } else if (key === "u") {
      undo();
    } else if (key === "j" || key === "ArrowDown") {
      focusGroup(current + 1);
    } else if (key === "k" || key === "ArrowUp") {
      focusGroup(current - 1);
    } else {
      return;
    }
    event.preventDefault();
  });

  document.getElementById("prev")?.addEventListener("click", () => {
    offset = Math.max(0, offset - limit);
    load();
  });
  // Groups resolved on this page leave the listing (unless resolved ones are shown), so the
  // next page starts after the ones that stay, not a whole page further: none is skipped.
  document.getElementById("next")?.addEventListener("click", () => {
    const cards = [...groupsBox.querySelectorAll("section.group")];
    const stay = showAll && showAll.checked ? cards.length
      : cards.filter((c) => c.dataset.state !== "resolved").length;
    offset += stay;
    load();
  });
  showAll?.addEventListener("change", () => { offset = 0; load(); });

  // ---- apply: the dry run's list first, then exactly that plan ---------------------------------

  const action = document.getElementById("apply-action");
  const target = document.getElementById("apply-target");
  const targetLabel = document.getElementById("apply-target-label");
  const previewButton = document.getElementById("preview-apply");
  const runButton = document.getElementById("run-apply");
  const undoApplyButton = document.getElementById("undo-apply");
  const applyStatus = document.getElementById("apply-status");
  const steps = document.getElementById("apply-steps");
  let plan = null;

  const applyBody = () => ({
    action: action.value, target: action.value === "move-to" ? target.value.trim() : null,
  });

  const forget = () => {
    plan = null;
    runButton.hidden = true;
    steps.replaceChildren();
  };

  const showSteps = (doc) => {
    const verb = { trash: "trash", "move-to": "move", hardlink: "hard-link", symlink: "symlink",
      delete: "delete" }[doc.action];
    steps.replaceChildren(...doc.steps.map((s) => el("li", {}, [
      `${verb} ${s.path}`, s.dest && doc.action === "move-to" ? ` → ${s.dest}` : "",
      el("span", { class: "keeps" }, [` (keeps ${s.keeper})`])])),
    ...doc.skipped.map((why) => el("li", { class: "skipped" }, [`left alone: ${why}`])));
  };

  const preview = async () => {
    forget();
    setStatus(applyStatus, "Working out what would happen…", "busy");
    try {
      const doc = await api("POST", "/api/dupes/apply", { ...applyBody(), dry_run: true });
      showSteps(doc);
      if (doc.steps.length) {
        plan = doc.plan;
        runButton.hidden = false;
        runButton.textContent = `Apply: ${action.selectedOptions[0].textContent.toLowerCase()}, `
          + `${doc.steps.length} file${doc.steps.length === 1 ? "" : "s"}`;
        setStatus(applyStatus, "Nothing has changed yet: this is what Apply would do.", "done");
      } else {
        setStatus(applyStatus, "Nothing to do: decide a group with Keep first.", "done");
      }
    } catch (error) {
      setStatus(applyStatus, error.message, "error");
    }
  };

  const run = async () => {
    if (!plan) return;
    setStatus(applyStatus, "Applying…", "busy");
    try {
      const doc = await api("POST", "/api/dupes/apply", { ...applyBody(), dry_run: false, plan });
      forget();
      showSteps(doc);
      setStatus(applyStatus, `Done: ${doc.done} file${doc.done === 1 ? "" : "s"}`
        + (doc.journal ? ` (journal ${doc.journal}; Undo the last apply puts them back)` : ""),
        "done");
      load();
    } catch (error) {
      forget();
      setStatus(applyStatus, error.message, "error");
    }
  };

  const undoApply = async () => {
    forget();
    setStatus(applyStatus, "Putting the files back…", "busy");
    try {
      const doc = await api("POST", "/api/dupes/apply/undo", {});
      const problems = doc.problems.length ? `; ${doc.problems.length} problem(s): `
        + doc.problems.join("; ") : "";
      setStatus(applyStatus, `Restored ${doc.restored} file(s) from ${doc.journal}${problems}`,
        doc.problems.length ? "error" : "done");
      load();
    } catch (error) {
      setStatus(applyStatus, error.message, "error");
    }
  };

  if (action && previewButton && runButton && undoApplyButton && steps && applyStatus) {
    action.addEventListener("change", () => {
      targetLabel.hidden = action.value !== "move-to";
      forget();
    });
    target.addEventListener("input", forget);
    previewButton.addEventListener("click", preview);
    runButton.addEventListener("click", run);
    undoApplyButton.addEventListener("click", undoApply);
  }

  load();
})();
