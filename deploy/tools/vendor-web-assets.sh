#!/usr/bin/env bash
# Vendors the web's front-end assets from npm, pinned, into the repository (CI and the app never
# need npm): govuk-frontend's compiled CSS/JS (MIT; NOT its GDS Transport font nor its images: the
# font's licence and the crown and crest images are for GOV.UK only; the CSS falls back to arial and
# the layout uses no crown), htmx, and axe-core for the browser tests.
# Writes SHA256SUMS beside each vendored folder; tests/unit/web/test_vendored_assets.py checks them.
#   deploy/tools/vendor-web-assets.sh      re-vendor (needs npm), then commit the files
set -euo pipefail

GOVUK_FRONTEND=6.6.0
HTMX=2.0.11
AXE_CORE=4.14.1

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WEB="$ROOT/services/web/static/vendor"
BROWSER="$ROOT/tests/browser/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch() { # package version -> unpacked folder
  (cd "$WORK" && npm pack --silent "$1@$2" >/dev/null && mkdir -p "$1" && tar -xzf "$1"-"$2".tgz -C "$1")
  echo "$WORK/$1/package"
}

rm -rf "$WEB" "$BROWSER"
mkdir -p "$WEB/govuk-frontend" "$WEB/htmx" "$BROWSER"

g="$(fetch govuk-frontend "$GOVUK_FRONTEND")"
cp "$g"/dist/govuk/govuk-frontend.min.css "$WEB/govuk-frontend/"
cp "$g"/dist/govuk/govuk-frontend.min.js "$WEB/govuk-frontend/"

h="$(fetch htmx.org "$HTMX")"
cp "$h"/dist/htmx.min.js "$WEB/htmx/"
cp "$h"/LICENSE "$WEB/htmx/" 2>/dev/null || true

a="$(fetch axe-core "$AXE_CORE")"
cp "$a"/axe.min.js "$BROWSER/"
cp "$a"/LICENSE "$BROWSER/" 2>/dev/null || true

cat > "$WEB/VERSIONS" <<V
govuk-frontend $GOVUK_FRONTEND
htmx.org $HTMX
V
echo "axe-core $AXE_CORE" > "$BROWSER/VERSIONS"
for dir in "$WEB" "$BROWSER"; do
  (cd "$dir" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
done
echo "vendored into $WEB and $BROWSER"
