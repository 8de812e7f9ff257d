// The one script of the layout (no inline script: the CSP forbids it). GOV.UK Frontend's
// components are enhanced only where the browser supports ES modules.
import { initAll } from "/static/vendor/govuk-frontend/govuk-frontend.min.js";

document.body.classList.add("js-enabled", "govuk-frontend-supported");
initAll();
