#!/usr/bin/env bash
# Installs what ferry's tests and README commands need on a fresh Debian
# machine: git, rsync and tar (parity with stretcher), zstd, and serf (the
# event-handler tests), systemd (systemd-analyze verifies exported units) and
# python3 (reads exported supervisord configs as supervisord does), curl (the
# fleet test app's health check), iproute2 (network namespaces for test hosts) and
# etcd-server (the etcd state store's tests run a real etcd), and builds versitygw (below).
# Go modules come from the module proxy via go test.
set -euo pipefail
need=()
for pkg in git rsync tar zstd serf e2fsprogs systemd python3 curl iproute2 etcd-server etcd-client; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# versitygw: a real S3-compatible server for store/blob's tests. Not in
# Debian; built once from the Go module proxy (about 3 minutes cold) into
# /usr/local/bin, or $(go env GOPATH)/bin when that is not writable.
if ! command -v versitygw >/dev/null 2>&1; then
  dest=/usr/local/bin
  if [ ! -w "$dest" ]; then dest="$(go env GOPATH)/bin"; mkdir -p "$dest"; fi
  tmp="$(mktemp -d)"
  (
    cd "$tmp"
    go mod init versitygw-build >/dev/null 2>&1
    go get github.com/versity/versitygw/cmd/versitygw@v1.8.0 >/dev/null 2>&1
    go build -o "$dest/versitygw" github.com/versity/versitygw/cmd/versitygw
  )
  rm -rf "$tmp"
  case ":$PATH:" in *":$dest:"*) ;; *) echo "install-deps: versitygw is in $dest; add it to PATH" >&2 ;; esac
fi
