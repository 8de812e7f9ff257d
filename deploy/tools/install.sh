#!/usr/bin/env bash
# The tools the deployment checks need, installed into the checkout (.flourish/tools/bin), pinned,
# from package registries only. Idempotent: a tool already at its pinned version is left alone.
#
#   kustomize  built with the machine's Go from its module (go install), so no binary download
#   promtool   taken from Debian's prometheus package (apt-get download + dpkg-deb -x): the
#              package's promtool without installing, or starting, a Prometheus server
#
# Prints the bin folder on its last line. Fails loudly, never skips, when a tool cannot be had.
set -euo pipefail

KUSTOMIZE_VERSION="v5.8.1"
PROMETHEUS_DEB_VERSION_PREFIX="2."   # any Debian prometheus 2.x; promtool's rule and metric checks are stable there

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.flourish/tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

say() { printf 'deploy/tools/install.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

install_kustomize() {
  if [[ -x "$BIN/kustomize" ]] && [[ "$("$BIN/kustomize" version 2>/dev/null)" == "$KUSTOMIZE_VERSION" ]]; then
    return
  fi
  command -v go >/dev/null 2>&1 || die "kustomize is built with Go (go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION) and no 'go' is on PATH; install Go 1.24 or newer"
  say "building kustomize $KUSTOMIZE_VERSION with $(go version | cut -d' ' -f3) (takes a few minutes once)"
  # The module's own go.mod and go.sum pin its dependencies; -ldflags stamp the version it reports.
  GOBIN="$BIN" GOFLAGS=-mod=mod CGO_ENABLED=0 go install \
    -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=$KUSTOMIZE_VERSION" \
    "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" \
    || die "go install of kustomize $KUSTOMIZE_VERSION failed (is the Go module proxy reachable?)"
  [[ "$("$BIN/kustomize" version)" == "$KUSTOMIZE_VERSION" ]] \
    || die "kustomize reports '$("$BIN/kustomize" version)', expected $KUSTOMIZE_VERSION"
}

install_promtool() {
  if [[ -x "$BIN/promtool" ]] && "$BIN/promtool" --version >/dev/null 2>&1; then
    return
  fi
  command -v apt-get >/dev/null 2>&1 || die "promtool comes from Debian's prometheus package and this machine has no apt-get; install promtool (Prometheus 2.x) and put it at $BIN/promtool"
  command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is needed to unpack Debian's prometheus package"
  local candidate
  candidate="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
    [[ "$(id -u)" == 0 ]] || die "apt knows no 'prometheus' package and only root can run apt-get update; run 'apt-get update' as root, then this script again"
    say "apt-get update (apt knows no prometheus package yet)"
    apt-get update -qq || die "apt-get update failed"
    candidate="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
  fi
  [[ -n "$candidate" && "$candidate" != "(none)" ]] || die "Debian's package lists have no 'prometheus' package; promtool cannot be installed"
  [[ "$candidate" == "$PROMETHEUS_DEB_VERSION_PREFIX"* ]] || die "Debian offers prometheus $candidate, not ${PROMETHEUS_DEB_VERSION_PREFIX}x; check promtool's checks still pass, then update PROMETHEUS_DEB_VERSION_PREFIX"
  local work
  work="$(mktemp -d)"
  # apt-get download drops privileges to _apt, which must be able to write the folder.
  if [[ "$(id -u)" == 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
  trap 'rm -rf "$work"' RETURN
  say "fetching Debian's prometheus $candidate for its promtool"
  (cd "$work" && apt-get download -qq "prometheus=$candidate") || die "apt-get download prometheus=$candidate failed"
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  install -m 0755 "$work/root/usr/bin/promtool" "$BIN/promtool"
  "$BIN/promtool" --version >/dev/null 2>&1 || die "the unpacked promtool does not run"
}

started=$SECONDS
install_kustomize
install_promtool
say "kustomize $("$BIN/kustomize" version), promtool $("$BIN/promtool" --version 2>&1 | head -1 | awk '{print $3}') ready in $((SECONDS - started))s"
echo "$BIN"
