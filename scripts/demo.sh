#!/usr/bin/env bash
# ferry's main job, until the control server lands: build examples/hello
# into a reproducible artifact and install it as an atomic release in
# ${DEST:-/tmp/ferry-demo/hello}, then do it again with a second version.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
go build -o bin/ferry ./cmd/ferry
dest=${DEST:-/tmp/ferry-demo/hello}
for v in v1 v2; do
  bin/ferry build examples/hello --version "$v"
  sum=$(cut -d' ' -f1 "examples/hello/dist/hello-$v-linux-amd64.tar.zst.sha256")
  printf 'src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\nshared: [log/]\n' \
    "$PWD/examples/hello/dist/hello-$v-linux-amd64.tar.zst" "$sum" "$dest" | bin/ferry apply -
done
echo
echo "current -> $(readlink "$dest/current")   previous -> $(readlink "$dest/previous")"
ls "$dest/releases"
