#!/usr/bin/env python3
"""Pin every image reference by digest: `name:tag` becomes `name:tag@sha256:<digest>`.

Reads the manifests under deploy/k8s (not the CRDs), and any other file given (a Dockerfile, a
compose file), finds each image reference (`image:` / `imageName:` values, a Dockerfile's `FROM`),
asks the registry for the digest the tag names now, and rewrites the line in place, keeping the
tag so a reader still sees the version. A reference must name an exact version: `latest`, no tag,
or a floating tag (`18`, `3.11-slim`) is refused, never pinned. A reference that is a Kustomize
image name (`image: flourish`, set by the overlays' `images:`) is left to Kustomize.

How a digest is found, first that works: `crane digest`, `skopeo inspect`, the registry's HTTP API
(OCI distribution: HEAD /v2/<name>/manifests/<tag> with an anonymous bearer token when the
registry asks for one). Without network, nothing is rewritten and the exit status is 1.

    deploy/tools/pin-images.py              rewrite deploy/k8s in place
    deploy/tools/pin-images.py --check      exit 1 if a reference is floating or not pinned
    deploy/tools/pin-images.py --dry-run    print what would change
    deploy/tools/pin-images.py Dockerfile compose.yaml   also (or only) these files
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

Resolver = Callable[[str], str]  # "registry/name:tag" -> "sha256:<hex>"

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# An exact version: major.minor.patch (0.128.0, 4.1.1, 3.11.9-slim-bookworm), or major.minor with a
# build stamp of its own (CloudNativePG's 18.3-202602261638-system-bookworm): never a tag that
# moves with the next release (3.11-slim, 18, latest).
_SUFFIX = r"([-+_.][0-9A-Za-z][0-9A-Za-z._+-]*)?"
EXACT_TAG = re.compile(rf"^v?(\d+\.\d+\.\d+{_SUFFIX}|\d+\.\d+-\d{{8,}}{_SUFFIX})$")

YAML_LINE = re.compile(r"^(?P<head>\s*-?\s*(?:image|imageName):\s*)(?P<quote>[\"']?)(?P<ref>[^\"'\s#]+)(?P=quote)"
                       r"(?P<tail>\s*(?:#.*)?)$")
FROM_LINE = re.compile(r"^(?P<head>\s*FROM\s+(?:--platform=\S+\s+)?)(?P<ref>\S+)(?P<tail>.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Reference:
    name: str  # registry/repository, as written
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest = text.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            name, tag = rest[:colon], rest[colon + 1:]
        else:
            name, tag = rest, None
        return cls(name, tag, digest or None)

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def is_kustomize_name(self) -> bool:
        """A bare name with neither tag nor digest nor registry: the overlays' `images:` set it."""
        return self.tag is None and self.digest is None and "/" not in self.name and "." not in self.name

    @property
    def exact(self) -> bool:
        return self.tag is not None and self.tag != "latest" and bool(EXACT_TAG.match(self.tag))


@dataclass
class Finding:
    path: Path
    line: int
    reference: str
    problem: str | None = None  # None: pinned (or rewritten)
    new: str | None = None


def pin_text(text: str, resolve: Resolver, *, dockerfile: bool = False, refresh: bool = False,
             path: Path = Path("-")) -> tuple[str, list[Finding]]:
    """The text with every exact, unpinned image reference pinned by digest, and what was found.
    A reference already pinned is kept unless `refresh`; a floating one is reported, unchanged."""
    findings: list[Finding] = []
    out: list[str] = []
    pattern = FROM_LINE if dockerfile else YAML_LINE
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        ending = line[len(line.rstrip("\r\n")):]
        match = pattern.match(line.rstrip("\r\n"))
        if not match:
            out.append(line)
            continue
        raw = match.group("ref")
        if dockerfile and (raw.lower() == "scratch" or "$" in raw):
            out.append(line)
            continue
        reference = Reference.parse(raw)
        if not dockerfile and reference.is_kustomize_name:
            out.append(line)
            continue
        finding = Finding(path, number, raw)
        findings.append(finding)
        if not reference.exact:
            finding.problem = f"{raw}: not an exact version (a floating tag, `latest` or no tag)"
            out.append(line)
            continue
        if reference.digest and not refresh:
            if not DIGEST.match(reference.digest):
                finding.problem = f"{raw}: malformed digest"
            out.append(line)
            continue
        try:
            digest = resolve(f"{reference.name}:{reference.tag}")
        except Exception as error:  # noqa: BLE001 - any resolver failure is reported, the line kept
            finding.problem = f"{raw}: could not resolve ({type(error).__name__}: {error})"
            out.append(line)
            continue
        if not DIGEST.match(digest):
            finding.problem = f"{raw}: the registry answered a malformed digest {digest!r}"
            out.append(line)
            continue
        pinned = str(Reference(reference.name, reference.tag, digest))
        finding.new = pinned
        quote = "" if dockerfile else match.group("quote")
        out.append(f"{match.group('head')}{quote}{pinned}{quote}{match.group('tail')}{ending}")
    return "".join(out), findings


# --- Resolvers -----------------------------------------------------------------------------------


def _split_registry(name: str) -> tuple[str, str]:
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "registry-1.docker.io", name
    if registry in ("docker.io", "index.docker.io"):
        registry = "registry-1.docker.io"
    if registry == "registry-1.docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))


def registry_api_digest(reference: str, timeout: float = 20.0) -> str:
    """The digest of a tag by the OCI distribution API (an anonymous token when one is asked for)."""
    parsed = Reference.parse(reference)
    registry, repository = _split_registry(parsed.name)
    url = f"https://{registry}/v2/{repository}/manifests/{parsed.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    request = urllib.request.Request(url, method="HEAD", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.headers["Docker-Content-Digest"]
    except urllib.error.HTTPError as error:
        if error.code != 401:
            raise
        challenge = error.headers.get("WWW-Authenticate", "")
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if not challenge.lower().startswith("bearer") or "realm" not in params:
        raise RuntimeError(f"{registry} asks for credentials this script does not have")
    query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")}
                                   | ({} if "scope" in params else {"scope": f"repository:{repository}:pull"}))
    with urllib.request.urlopen(f"{params['realm']}?{query}", timeout=timeout) as response:
        token = json.load(response).get("token") or ""
    request = urllib.request.Request(url, method="HEAD", headers=headers | {"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.headers["Docker-Content-Digest"]


def tool_digest(reference: str) -> str:
    """crane or skopeo, whichever is installed (they use the caller's registry credentials)."""
    if shutil.which("crane"):
        return subprocess.run(["crane", "digest", reference], check=True, capture_output=True, text=True,
                              timeout=60).stdout.strip()
    if shutil.which("skopeo"):
        return subprocess.run(["skopeo", "inspect", "--format", "{{.Digest}}", f"docker://{reference}"], check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()
    raise FileNotFoundError("neither crane nor skopeo is installed")


def default_resolver(reference: str) -> str:
    try:
        return tool_digest(reference)
    except (FileNotFoundError, subprocess.CalledProcessError):
        return registry_api_digest(reference)


# --- Files ---------------------------------------------------------------------------------------


def manifest_files(root: Path = K8S) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml") if "crds" not in p.relative_to(root).parts)


def pin_files(paths: Iterable[Path], resolve: Resolver, *, write: bool, refresh: bool = False) -> list[Finding]:
    findings: list[Finding] = []
    for path in paths:
        text = path.read_text()
        dockerfile = path.name.startswith("Dockerfile") or path.suffix == ".Dockerfile"
        new_text, found = pin_text(text, resolve, dockerfile=dockerfile, refresh=refresh, path=path)
        findings += found
        if write and new_text != text:
            path.write_text(new_text)
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="files to pin (default: deploy/k8s's manifests)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing; exit 1 if any reference is floating or unpinned")
    mode.add_argument("--dry-run", action="store_true", help="change nothing; print what would change")
    parser.add_argument("--refresh", action="store_true", help="resolve references already pinned again")
    args = parser.parse_args(argv)
    paths = args.files or manifest_files()

    if args.check:
        def unresolved(reference: str) -> str:
            raise LookupError("not pinned")
        findings = pin_files(paths, unresolved, write=False)
    else:
        findings = pin_files(paths, default_resolver, write=not args.dry_run, refresh=args.refresh)
    status = 0
    for finding in findings:
        shown = finding.path.relative_to(ROOT) if finding.path.is_relative_to(ROOT) else finding.path
        where = f"{shown}:{finding.line}"
        if finding.problem:
            print(f"{where}: {finding.problem}", file=sys.stderr)
            status = 1
        elif finding.new:
            print(f"{where}: {finding.reference} -> {finding.new}")
    return status


if __name__ == "__main__":
    sys.exit(main())
