#!/usr/bin/env bash
# Fails if failway's build would need protoc or generate code from .proto
# files: none of the crates that do it may be in the dependency tree, for
# the build itself or for the tests. failway builds with cargo and a C
# compiler alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
banned=(prost-build tonic-build tonic-prost-build protoc-bin-vendored protobuf-src)
status=0
for edges in normal,build normal,build,dev; do
    tree="$(cargo tree --locked -e "$edges" --prefix none)"
    for crate in "${banned[@]}"; do
        if grep -Eq "^${crate} v" <<<"$tree"; then
            echo "no-codegen: cargo tree -e $edges lists $crate:" >&2
            cargo tree --locked -e "$edges" -i "$crate" >&2 || true
            status=1
        fi
    done
done
if [[ $status -eq 0 ]]; then
    echo "no-codegen: no protoc or .proto code generation in the dependency tree"
fi
exit $status
