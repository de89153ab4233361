// ferry's one script: an element with data-refresh="URL" is refreshed
// with the HTML fragment at URL every 2 seconds, so status and
// deployments update without reloading. Everything else works without it.
"use strict";
for (const el of document.querySelectorAll("[data-refresh]")) {
  const every = Number(el.dataset.every) || 2000;
  const tick = async () => {
    try {
      const r = await fetch(el.dataset.refresh, { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { location.reload(); return; }
      if (r.ok) {
        const html = await r.text();
        // Keep the focus where it was when the region is redrawn.
        const focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement.dataset.test : null;
        el.innerHTML = html;
        el.dataset.updated = String(Date.now());
        if (focused) { const f = el.querySelector(`[data-test="${focused}"]`); if (f) f.focus(); }
      }
    } catch (e) { /* the server is away: try again */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}
