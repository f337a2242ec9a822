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
command -v aarch64-linux-gnu-gcc >/dev/null || need_pkgs+=(gcc-aarch64-linux-gnu)
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

step "cross builds for the Raspberry Pi (firmware-notes/README.md)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
GOOS=linux GOARCH=arm GOARM=6 CGO_ENABLED=0 go build -o "$out/matrix-pair-armv6" ./cmd/matrix-pair
GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -o "$out/matrix-pair-arm64" ./cmd/matrix-pair
CC=aarch64-linux-gnu-gcc CGO_ENABLED=1 GOOS=linux GOARCH=arm64 go build -o "$out/devicegrantd-arm64" ./cmd/devicegrantd
echo "built: $(cd "$out" && ls | tr '\n' ' ')"
