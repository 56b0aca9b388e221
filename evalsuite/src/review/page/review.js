// The blind review page. Every piece of study text is inserted with textContent, never as
// markup. The reviewer's token comes from the link's fragment (#t=…), which browsers do not
// send to servers, and travels only in the Authorization header.
"use strict";
(function () {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("t");
  if (fromLink) sessionStorage.setItem("tunelab-review-token", fromLink);
  const token = fromLink || sessionStorage.getItem("tunelab-review-token");
  const $ = (id) => document.getElementById(id);
  let current = null; // the task shown
  let history = []; // task ids voted on, in order
  let position = -1; // index into history when looking back, -1 at the newest
  let busy = false;

  function say(text) { $("message").textContent = text || ""; }

  async function api(path, body) {
    const init = { headers: { Authorization: "Bearer " + token } };
    if (body) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({ error: "unexpected reply" }));
    if (!response.ok) throw Object.assign(new Error(data.error || "request failed"), { status: response.status });
    return data;
  }

  function showProgress(p) {
    if (p) $("progress").textContent = p.done + " / " + p.total;
  }

  function render(view) {
    showProgress(view.progress);
    if (view.finished) {
      current = null;
      $("item").hidden = true;
      say(view.closed ? "This study is closed. Thank you!" : "All done: nothing is left for you to review. Thank you!");
      if (history.length) { $("item").hidden = false; setEnabled(false); }
      return;
    }
    current = view;
    $("item").hidden = false;
    $("prompt").textContent = view.prompt;
    $("left").textContent = view.left;
    $("right").textContent = view.right;
    const hasReference = typeof view.reference === "string";
    $("reference-box").hidden = !hasReference;
    $("reference").textContent = hasReference ? view.reference : "";
    $("comment").value = "";
    for (const b of document.querySelectorAll("[data-choice]")) {
      b.classList.toggle("chosen", b.dataset.choice === view.choice);
    }
    setEnabled(!view.closed);
    say(view.choice ? "Your vote on this earlier item is highlighted; choose again to change it." : "");
  }

  function setEnabled(on) {
    for (const b of document.querySelectorAll("[data-choice]")) b.disabled = !on || !current;
  }

  async function loadHistory() {
    history = (await api("/api/history")).tasks.map((t) => t.task);
  }

  async function showNewest() {
    position = -1;
    render(await api("/api/next"));
  }

  async function show(offset) {
    if (busy) return;
    busy = true;
    try {
      await loadHistory();
      let p = position === -1 ? history.length : position;
      p += offset;
      if (p < 0) p = 0;
      if (p >= history.length) await showNewest();
      else { position = p; render(await api("/api/task/" + encodeURIComponent(history[p]))); }
    } catch (e) { say(e.message); } finally { busy = false; }
  }

  function requestId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  async function vote(choice) {
    if (busy || !current) return;
    busy = true;
    const body = { task: current.task, choice: choice, comment: $("comment").value, request_id: requestId() };
    try {
      for (let attempt = 0; ; attempt++) {
        try { await api("/api/vote", body); break; } catch (e) {
          // A network failure (fetch rejects with a TypeError in every browser, whatever its
          // message) or a timed-out request is retried with the same request id: it is never
          // counted twice.
          const retryable = e instanceof TypeError || e.status === 408;
          if (attempt >= 2 || !retryable) throw e;
        }
      }
      if (position === -1) await showNewest(); else { busy = false; await show(1); }
    } catch (e) { say(e.message); } finally { busy = false; }
  }

  for (const b of document.querySelectorAll("[data-choice]")) b.addEventListener("click", () => vote(b.dataset.choice));
  $("previous").addEventListener("click", () => show(-1));
  $("next").addEventListener("click", () => show(1));
  document.addEventListener("keydown", (e) => {
    if (e.target && e.target.id === "comment") return;
    const choice = { "1": "left", "2": "right", "3": "tie", "4": "both_bad" }[e.key];
    if (choice) { e.preventDefault(); vote(choice); }
    else if (e.key === "ArrowLeft") { e.preventDefault(); show(-1); }
    else if (e.key === "ArrowRight") { e.preventDefault(); show(1); }
  });

  if (!token) { say("This page needs the review link you were given."); return; }
  (async () => {
    try { await loadHistory(); await showNewest(); document.body.dataset.ready = "1"; } catch (e) { say(e.message); }
  })();
})();
