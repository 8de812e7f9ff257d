#!/usr/bin/env bash
# versitygw, the S3-compatible gateway the audit witness's S3 tests run against (a real S3 API with
# Object Lock over a local folder), built into the checkout (.flourish/tools/bin), pinned, from the
# Go module proxy only (go install): no binary download. Idempotent: a versitygw already at its
# pinned version is left alone. tests/integration/audit calls it on first use (~2 minutes once).
#
# Prints the binary's path on its last line. Fails loudly, never skips, when it cannot be built.
set -euo pipefail

VERSITYGW_VERSION="v1.8.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/.flourish/tools/bin"
mkdir -p "$BIN"

say() { printf 'deploy/tools/install-versitygw.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

STAMP="$BIN/.versitygw-version"
if [[ -x "$BIN/versitygw" ]] && [[ "$(cat "$STAMP" 2>/dev/null)" == "$VERSITYGW_VERSION" ]]; then
  echo "$BIN/versitygw"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "versitygw is built with Go (go install github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION) and no 'go' is on PATH; install Go 1.24 or newer"
say "building versitygw $VERSITYGW_VERSION with $(go version | cut -d' ' -f3) (takes a few minutes once)"
started=$SECONDS
# The module's own go.mod and go.sum pin its dependencies.
GOBIN="$BIN" GOFLAGS=-mod=mod CGO_ENABLED=0 go install -ldflags "-s -w" \
  "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
  || die "go install of versitygw $VERSITYGW_VERSION failed (is the Go module proxy reachable?)"
"$BIN/versitygw" --help >/dev/null 2>&1 || die "the built versitygw does not run"
echo "$VERSITYGW_VERSION" > "$STAMP"
say "versitygw $VERSITYGW_VERSION ready in $((SECONDS - started))s"
echo "$BIN/versitygw"
