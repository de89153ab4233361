#!/usr/bin/env bash
# The whole test suite: installs dependencies, vets, runs staticcheck and
# the dependency test (deps_test.go, in the root package), and runs every
# test. The packages whose tests run in-process run under the race
# detector, once: all but ./integration and ./bench/..., which build and
# drive the real binaries (a race in the code they run shows up in the
# package tests) and under -race would not fit in 20 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
go vet ./...
"$(go env GOPATH)/bin/staticcheck" ./...

heavy=$(go list ./integration ./bench/...)
race=$(comm -23 <(go list ./... | sort) <(sort <<<"$heavy"))
# Both halves run even when the first fails, so one run shows every failure.
rc=0
go test -count=1 -race -timeout 15m $race || rc=1
go test -count=1 -timeout 15m $heavy || rc=1
exit $rc
