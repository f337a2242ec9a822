#!/usr/bin/env bash
# The one test command: ./test.sh  (CI runs exactly this via .ci/run).
# It installs what the tests need when it is missing, then runs the static
# checks and every test with the race detector.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

# Debian packages the tests use. Installed only when missing.
need_pkgs=()
command -v tmux >/dev/null || need_pkgs+=(tmux)
command -v gcc >/dev/null || need_pkgs+=(gcc)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  step "installing ${need_pkgs[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

export CGO_ENABLED=1
gobin="$(go env GOPATH)/bin"
if ! [ -x "$gobin/staticcheck" ]; then
  step "installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "staticcheck"
"$gobin/staticcheck" ./...

step "go test -race"
go test -race -count=1 -timeout 15m ./...
