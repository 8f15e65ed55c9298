// Refreshes the page's live part without a reload: it fetches the page
// again (one store read on the server) and swaps in the new main element.
// Without scripts the pages are complete; this only keeps them current.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.refresh) {
    return;
  }
  const every = Number(live.dataset.refresh) * 1000;
  async function refresh() {
    try {
      const r = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (r.ok) {
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const next = doc.getElementById("live");
        const cur = document.getElementById("live");
        // Keep the keyboard where it was: skip the swap while the user is in the filter form.
        if (next && cur && (!cur.contains(document.activeElement) || document.activeElement === document.body)) {
          cur.replaceWith(next);
        }
      }
    } catch (e) {
      // The server is away for a moment; the next round tries again.
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
