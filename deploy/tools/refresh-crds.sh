#!/usr/bin/env bash
# Refresh the operator CRDs the manifests are validated against (deploy/k8s/crds/), from the
# package registries the project already uses:
#   CloudNativePG  its Go module (go mod download), config/crd/bases/
#   Strimzi        its io.strimzi:api artifact's test-jar (Maven), crds/v1beta2/: the CRD files the
#                  api module generates from its model classes, named as in the operator's
#                  install bundle (040-Crd-kafka.yaml, ...); "v1beta2" names the storage version,
#                  and the files serve kafka.strimzi.io/v1 too.
# Only the kinds the manifests use are kept. Change a version here, run this, run the tests,
# and update the versions in deploy/k8s/README.md (the operators a cluster must run).
set -euo pipefail

CNPG_VERSION="v1.29.0"
STRIMZI_VERSION="0.51.0"
CNPG_CRDS=(postgresql.cnpg.io_clusters.yaml postgresql.cnpg.io_scheduledbackups.yaml)
STRIMZI_CRDS=(040-Crd-kafka.yaml 043-Crd-kafkatopic.yaml 044-Crd-kafkauser.yaml 045-Crd-kafkanodepool.yaml)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/deploy/k8s/crds"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v go >/dev/null || { echo "refresh-crds.sh: needs go" >&2; exit 1; }
command -v mvn >/dev/null || { echo "refresh-crds.sh: needs mvn" >&2; exit 1; }

cnpg_dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
mkdir -p "$OUT/cloudnative-pg"
rm -f "$OUT"/cloudnative-pg/*.yaml
for crd in "${CNPG_CRDS[@]}"; do
  install -m 0644 "$cnpg_dir/config/crd/bases/$crd" "$OUT/cloudnative-pg/$crd"
done

mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="io.strimzi:api:$STRIMZI_VERSION:jar:tests" -DoutputDirectory="$work/strimzi" -Dmdep.stripVersion=true \
  > "$work/mvn.log" 2>&1 || { cat "$work/mvn.log" >&2; exit 1; }
mkdir -p "$OUT/strimzi" "$work/strimzi/x"
rm -f "$OUT"/strimzi/*.yaml
(cd "$work/strimzi/x" && python3 -m zipfile -e ../api-tests.jar . >/dev/null)
for crd in "${STRIMZI_CRDS[@]}"; do
  install -m 0644 "$work/strimzi/x/crds/v1beta2/$crd" "$OUT/strimzi/$crd"
done

{
  echo "# Where these CRDs come from (written by deploy/tools/refresh-crds.sh; do not edit by hand)"
  echo
  echo "| operator | version | package | files (sha256) |"
  echo "| --- | --- | --- | --- |"
  for crd in "${CNPG_CRDS[@]}"; do
    echo "| CloudNativePG | $CNPG_VERSION | Go module github.com/cloudnative-pg/cloudnative-pg, config/crd/bases/ | cloudnative-pg/$crd ($(sha256sum "$OUT/cloudnative-pg/$crd" | cut -c1-16)…) |"
  done
  for crd in "${STRIMZI_CRDS[@]}"; do
    echo "| Strimzi | $STRIMZI_VERSION | Maven io.strimzi:api:$STRIMZI_VERSION, classifier tests, crds/v1beta2/ | strimzi/$crd ($(sha256sum "$OUT/strimzi/$crd" | cut -c1-16)…) |"
  done
} > "$OUT/SOURCES.md"
echo "refresh-crds.sh: CloudNativePG $CNPG_VERSION and Strimzi $STRIMZI_VERSION CRDs in $OUT" >&2
