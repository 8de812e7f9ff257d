#!/usr/bin/env bash
# Headless Chromium (the intervention report's PDF, and the report tests' browser) and poppler-utils
# (pdftotext/pdftoppm, the tests' PDF checks), from the distribution's packages.
# Idempotent: does nothing when both are present. Fails loudly, never skips, when they cannot be had.
# Prints the chromium binary's path on its last line.
set -euo pipefail

say() { printf 'deploy/tools/install-chromium.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

find_chromium() { command -v chromium || command -v chromium-browser || true; }

if [[ -n "$(find_chromium)" ]] && command -v pdftotext >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1; then
  find_chromium
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install chromium and poppler-utils with this system's package manager"
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: run 'apt-get install -y chromium poppler-utils' as root"
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
# Update the package lists only when the packages are not known yet (a fresh image has none).
if ! apt-cache show chromium >/dev/null 2>&1 || ! apt-cache show poppler-utils >/dev/null 2>&1; then
  say "apt-get update"
  $SUDO apt-get update -q >&2 || die "apt-get update failed"
fi
say "apt-get install -y chromium poppler-utils"
$SUDO apt-get install -y -q --no-install-recommends chromium poppler-utils fonts-dejavu-core >&2 \
  || die "apt-get install chromium poppler-utils failed"

CHROMIUM="$(find_chromium)"
[[ -n "$CHROMIUM" ]] || die "chromium was installed but no chromium binary is on PATH"
command -v pdftotext >/dev/null 2>&1 || die "poppler-utils was installed but pdftotext is not on PATH"
"$CHROMIUM" --version >&2 || die "$CHROMIUM does not run"
echo "$CHROMIUM"
