#!/usr/bin/env bash
# The whole test suite: installs dependencies, vets, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
go vet ./...
go test -count=1 -timeout 15m ./...
