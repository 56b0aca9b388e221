// Read-only admin view: studies with their results, and the stored runs' summaries. The
// admin token stays in this tab's session storage and travels only in the Authorization
// header. All text is inserted with textContent.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("tunelab-admin-token");

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
    const data = await response.json().catch(() => ({ error: "unexpected reply" }));
    if (!response.ok) throw new Error(data.error || "request failed");
    return data;
  }

  function item(list, text, onClick) {
    const li = document.createElement("li");
    const a = document.createElement("button");
    a.textContent = text;
    a.addEventListener("click", onClick);
    li.appendChild(a);
    list.appendChild(li);
  }

  function detail(title, text) {
    $("detail-title").textContent = title;
    $("detail").textContent = text;
  }

  async function load() {
    try {
      const studies = await api("/api/admin/studies");
      $("studies").replaceChildren();
      for (const s of studies.studies) {
        item($("studies"), s.name + " (" + s.tasks + " tasks)", async () => {
          try { detail("Study " + s.name, JSON.stringify(await api("/api/admin/results?study=" + encodeURIComponent(s.name)), null, 2)); } catch (e) { detail("Study " + s.name, e.message); }
        });
      }
      $("runs").replaceChildren();
      try {
        const runs = (await api("/api/admin/runs")).runs;
        for (const r of runs) {
          item($("runs"), r, async () => {
            try { detail("Run " + r, (await api("/api/admin/runs/" + encodeURIComponent(r))).summary); } catch (e) { detail("Run " + r, e.message); }
            for (const other of runs.filter((o) => o !== r)) {
              item($("runs"), "report: " + r + " against " + other, async () => {
                const q = "?baseline=" + encodeURIComponent(other) + "&candidate=" + encodeURIComponent(r);
                try { detail("Report: " + r + " against " + other, (await api("/api/admin/compare" + q)).report); } catch (e) { detail("Report", e.message); }
              });
            }
          });
        }
      } catch (e) { $("runs").textContent = e.message; }
      $("panel").hidden = false;
      $("message").textContent = "";
    } catch (e) { $("message").textContent = e.message; }
  }

  $("signin").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("tunelab-admin-token", token);
    load();
  });
  if (token) load();
})();
