#!/usr/bin/env bash
# Headless Chromium and its fonts (the intervention report's PDF, and the report tests' browser) and
# poppler-utils (pdftotext/pdftoppm, the tests' PDF checks), from the distribution's packages.
#   install-chromium.sh            what the tests need: chromium, fonts, poppler-utils
#   install-chromium.sh --runtime  what the reporting service needs: chromium and fonts only (the
#                                  Dockerfile's runtime stage runs this, as root, before USER)
# Idempotent: does nothing when they are present. Fails loudly, never skips, when they cannot be had.
# Prints the chromium binary's path on its last line.
set -euo pipefail

say() { printf 'deploy/tools/install-chromium.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

RUNTIME=0
case "${1:-}" in
  "") ;;
  --runtime) RUNTIME=1 ;;
  *) die "unknown argument '$1' (usage: install-chromium.sh [--runtime])" ;;
esac
PACKAGES=(chromium fonts-dejavu-core)
(( RUNTIME )) || PACKAGES+=(poppler-utils)

find_chromium() { command -v chromium || command -v chromium-browser || true; }
have_pdf_tools() { command -v pdftotext >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1; }
have_fonts() { [[ -d /usr/share/fonts/truetype/dejavu ]]; }

if [[ -n "$(find_chromium)" ]] && have_fonts && { (( RUNTIME )) || have_pdf_tools; }; then
  find_chromium
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install ${PACKAGES[*]} with this system's package manager"
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: run 'apt-get install -y ${PACKAGES[*]}' as root"
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
# Update the package lists only when the packages are not known yet (a fresh image has none).
for package in "${PACKAGES[@]}"; do
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    say "apt-get update"
    $SUDO apt-get update -q >&2 || die "apt-get update failed"
    break
  fi
done
say "apt-get install -y ${PACKAGES[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2 \
  || die "apt-get install ${PACKAGES[*]} failed"

CHROMIUM="$(find_chromium)"
[[ -n "$CHROMIUM" ]] || die "chromium was installed but no chromium binary is on PATH"
(( RUNTIME )) || have_pdf_tools || die "poppler-utils was installed but pdftotext or pdftoppm is not on PATH"
have_fonts || die "fonts-dejavu-core was installed but /usr/share/fonts/truetype/dejavu is missing"
"$CHROMIUM" --version >&2 || die "$CHROMIUM does not run"
echo "$CHROMIUM"
