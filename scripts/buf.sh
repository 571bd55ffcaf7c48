#!/usr/bin/env bash
# Lint the protocol buffers (proto/buf.yaml) and check that they stay compatible with
# the released API: `proto/released.binpb` is the image of what clients were given
# (rebuild it only when releasing: scripts/buf.sh --release). buf comes from npm.
set -euo pipefail
cd "$(dirname "$0")/../proto"
BUF_VERSION=1.75.0

buf() {
  if command -v buf >/dev/null && [ "$(command buf --version 2>/dev/null)" = "$BUF_VERSION" ]; then
    command buf "$@"
  else
    npx --yes "@bufbuild/buf@$BUF_VERSION" "$@"
  fi
}

if [ "${1:-}" = --release ]; then
  buf build -o released.binpb
  echo "proto/released.binpb updated: commit it with the release" >&2
  exit 0
fi
buf lint
buf breaking --against released.binpb
echo "buf: lint clean, compatible with the released API" >&2
