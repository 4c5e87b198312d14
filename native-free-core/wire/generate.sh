#!/usr/bin/env bash
# Regenerates the TypeScript for schema.fbs (flatc 2.x, Debian package flatbuffers-compiler).
# Usage: generate.sh [output-dir]   (default: the committed generated/ folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/generated}"
command -v flatc >/dev/null || { echo "flatc not found: apt-get install -y flatbuffers-compiler" >&2; exit 1; }
mkdir -p "$out"
flatc --ts --ts-flat-files --gen-mutable -o "$out" "$here/schema.fbs"
# flatc declares an unused type parameter on union accessors; strict noUnusedParameters rejects it.
sed -i 's/message<T extends flatbuffers.Table>(obj:any)/message(obj:any)/' "$out/schema_generated.ts"
