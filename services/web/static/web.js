// The one script of the layout (no inline script: the CSP forbids it). GOV.UK Frontend's
// components are enhanced only where the browser supports ES modules.
import { initAll } from "/static/vendor/govuk-frontend/govuk-frontend.min.js";

document.body.classList.add("js-enabled", "govuk-frontend-supported");
initAll();

// SHARE: a receipt's or notice's "Print" button (shown only with JavaScript; without it the
// browser's own print command prints the same page, with the print stylesheet).
for (const button of document.querySelectorAll(".flourish-print-button")) {
  button.hidden = false;
  button.addEventListener("click", () => window.print());
}
// ADMIN (issue 20): a file upload (roster import, framework load) shows its progress while the
// API checks and applies the file; the upload's own progress when the browser reports it.
document.querySelectorAll("form.flourish-admin-upload").forEach((form) => {
  form.addEventListener("submit", () => {
    const status = form.querySelector(".flourish-admin-progress");
    if (status) {
      status.hidden = false;
    }
    const button = form.querySelector("button[type=submit]");
    if (button) {
      button.setAttribute("aria-disabled", "true");
    }
  });
});

// Screening grid (services/web/pages/screening.py): a cell's save-as-you-go request sends that cell
// only (htmx would send the whole grid's form) and this page's edit counter, so the server's Idempotency-Key (form key, cell, level, edit) tells a resent
// request (applied once) from changing a cell back to an earlier level (a new rating).
const screeningPage = Math.random().toString(36).slice(2);
let screeningEdits = 0;
document.body.addEventListener("htmx:configRequest", (event) => {
  if (event.detail.elt.closest && event.detail.elt.closest(".flourish-grid")) {
    const own = event.detail.elt.name;
    for (const key of [...event.detail.formData.keys()]) {
      if (key.includes("|") && key !== own) event.detail.formData.delete(key);
    }
    screeningEdits += 1;
    event.detail.parameters["edit"] = `${screeningPage}-${screeningEdits}`;
  }
});
