#!/usr/bin/env bash
# Installs what ferry's tests and README commands need on a fresh Debian
# machine: git, rsync and tar (parity with stretcher), zstd, and serf (the
# event-handler tests), systemd (systemd-analyze verifies exported units) and
# python3 (reads exported supervisord configs as supervisord does), curl (the
# fleet test app's health check), iproute2 (network namespaces for test hosts) and
# etcd-server (the etcd state store's tests run a real etcd), chromium (the web
# UI's tests drive it headless), nftables and iptables (packet loss and delay on test links),
# gunicorn, nodejs and npm (third-party apps the zero-downtime tests deploy), hey (load), and
# builds versitygw
# and fake-gcs-server (below), and staticcheck (the test command runs it).
# Go modules come from the module proxy via go test.
set -euo pipefail
need=()
for pkg in git rsync tar zstd serf e2fsprogs systemd python3 curl iproute2 etcd-server etcd-client chromium make nftables iptables gunicorn hey; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# Node and npm may come from elsewhere than Debian (nodesource ships npm
# inside its nodejs): install Debian's only when there is none.
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# versitygw (a real S3-compatible server) and fake-gcs-server (an emulator
# of GCS's JSON API) for store/blob's tests. Not in Debian; each built once
# from the Go module proxy (versitygw about 3 minutes cold) into
# /usr/local/bin, or $(go env GOPATH)/bin when that is not writable.
gobuild() { # NAME MODULE@VERSION PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  dest=/usr/local/bin
  if [ ! -w "$dest" ]; then dest="$(go env GOPATH)/bin"; mkdir -p "$dest"; fi
  tmp="$(mktemp -d)"
  (
    cd "$tmp"
    go mod init "$1-build" >/dev/null 2>&1
    go get "$2" >/dev/null 2>&1
    go build -o "$dest/$1" "$3"
  )
  rm -rf "$tmp"
  case ":$PATH:" in *":$dest:"*) ;; *) echo "install-deps: $1 is in $dest; add it to PATH" >&2 ;; esac
}
gobuild versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0 github.com/versity/versitygw/cmd/versitygw
gobuild fake-gcs-server github.com/fsouza/fake-gcs-server@v1.56.1 github.com/fsouza/fake-gcs-server

# staticcheck, pinned: a newer one may find new things, and the test
# command must mean the same on every machine. Built into $(go env
# GOPATH)/bin, where scripts/test.sh runs it from, unless that one already
# is this version.
staticcheck_version=v0.7.0
sc="$(go env GOPATH)/bin/staticcheck"
if ! "$sc" -version 2>/dev/null | grep -qF "($staticcheck_version)"; then
  mkdir -p "$(dirname "$sc")"
  tmp="$(mktemp -d)"
  (
    cd "$tmp"
    go mod init staticcheck-build >/dev/null 2>&1
    go get "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version" >/dev/null 2>&1
    go build -o "$sc" honnef.co/go/tools/cmd/staticcheck
  )
  rm -rf "$tmp"
fi
