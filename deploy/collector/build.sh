#!/usr/bin/env bash
# Builds the Collector of manifest.yaml into .cache/otelcol/<digest>/ (git-ignored), reusing it while the
# manifest, this script and the Go version are unchanged. Prints the binary's path on stdout.
#   deploy/collector/build.sh          build if needed
#   deploy/collector/build.sh --path   only print where the binary for the current manifest is (or would be)
set -euo pipefail

BUILDER_VERSION=v0.155.0
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="$ROOT/.cache/otelcol"
NAME=otelcol-tokentrail

die() { echo "deploy/collector/build.sh: $*" >&2; exit 1; }

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || die "Go not found (install Go >= 1.25, or set GO=/path/to/go)"
export GOTOOLCHAIN=local      # never fetch a toolchain binary
export GOFLAGS="${GOFLAGS:--p=2}"

digest="$( (cat "$HERE/manifest.yaml" "$HERE/build.sh"; "$GO" env GOVERSION GOOS GOARCH) | sha256sum | cut -c1-16)"
out="$CACHE/$digest"
binary="$out/$NAME"

if [[ "${1:-}" == "--path" ]]; then
  echo "$binary"
  exit 0
fi
if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

rm -rf "$out.tmp"
mkdir -p "$out.tmp/bin"
started=$SECONDS
GOBIN="$out.tmp/bin" "$GO" install -trimpath "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >&2 \
  || die "could not install the Collector builder $BUILDER_VERSION (is the Go module proxy reachable?)"
# GOFLAGS -e lets the builder's `go mod tidy` pass over modules that only the components' own tests import (the
# module proxy lacks a few of them); the build itself needs none. The builder compiles with -trimpath -ldflags='-s -w'.
(cd "$out.tmp" && GOFLAGS="-e $GOFLAGS" bin/builder --config="$HERE/manifest.yaml" >&2) \
  || die "the Collector builder failed (see above)"
mv "$out.tmp/build/$NAME" "$out.tmp/$NAME"
rm -rf "$out.tmp/build" "$out.tmp/bin"
# one binary per checkout: drop builds of older manifests
find "$CACHE" -mindepth 1 -maxdepth 1 ! -name "$digest.tmp" -exec rm -rf {} +
mv "$out.tmp" "$out"
echo "built $NAME in $((SECONDS - started))s" >&2
echo "$binary"
