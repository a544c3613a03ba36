// Conveniences only: every flow works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A notice ("Device credentials saved.") is shown once: drop its key from the address, so a
  // reload or a bookmark does not repeat it.
  const url = new URL(window.location.href);
  if (url.searchParams.has("done")) {
    url.searchParams.delete("done");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  // "Add ..." buttons open their disclosure card and focus its first field.
  const reveal = (target) => {
    target.open = true;
    target.scrollIntoView({ block: "start" });
    const field = target.querySelector("input:not([type=hidden]), textarea, select");
    if (field) field.focus();
  };
  for (const link of document.querySelectorAll("[data-open]")) {
    link.addEventListener("click", (event) => {
      const target = document.getElementById(link.dataset.open);
      if (!target) return;
      event.preventDefault();
      reveal(target);
    });
  }
  // An address naming a card (a bookmark, or a click that came before this script ran and
  // only moved to "#add-device") opens it too.
  const revealNamed = () => {
    const named = window.location.hash && document.getElementById(window.location.hash.slice(1));
    if (named instanceof HTMLDetailsElement) reveal(named);
  };
  revealNamed();
  window.addEventListener("hashchange", revealNamed);
  // Copy buttons beside ids and fingerprints (data-copy="value", or the element's text).
  if (!navigator.clipboard) return;
  for (const element of document.querySelectorAll("[data-copy]")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-quiet copy";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy to clipboard");
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(element.dataset.copy || element.textContent.trim());
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
    element.after(button);
  }
});
