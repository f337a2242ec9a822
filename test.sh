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

# >>> browser tests (e2e/): Debian's Chromium driven by playwright-core >>>
# Never a browser download: playwright-core runs /usr/bin/chromium. With
# DEVICEGRANT_BROWSER_TESTS=1 the tests in e2e/ fail instead of skipping
# when the browser or node_modules are missing.
browser_pkgs=()
[ -x /usr/bin/chromium ] || browser_pkgs+=(chromium)
command -v npm >/dev/null || browser_pkgs+=(nodejs) # the machine's apt source has Node 20 with npm
if [ ${#browser_pkgs[@]} -gt 0 ]; then
  step "installing ${browser_pkgs[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${browser_pkgs[@]}" >/dev/null
fi
if ! cmp -s e2e/package-lock.json e2e/node_modules/.devicegrant-lock; then
  step "npm ci in e2e/"
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
  cp e2e/package-lock.json e2e/node_modules/.devicegrant-lock
fi
export DEVICEGRANT_BROWSER_TESTS=1
# <<< browser tests (e2e/) <<<

# >>> third-party clients (interop/): openid-client and others from npm >>>
if ! cmp -s interop/package-lock.json interop/node_modules/.devicegrant-lock; then
  step "npm ci in interop/"
  (cd interop && npm ci --no-audit --no-fund --loglevel=error)
  cp interop/package-lock.json interop/node_modules/.devicegrant-lock
fi
export DEVICEGRANT_INTEROP_TESTS=1
# <<< third-party clients (interop/) <<<

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

step "benchmark harness smoke run (no thresholds; README \"Performance\")"
go run ./cmd/devicegrant-bench --smoke

step "cross builds for the Raspberry Pi (firmware-notes/README.md)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
GOOS=linux GOARCH=arm GOARM=6 CGO_ENABLED=0 go build -o "$out/matrix-pair-armv6" ./cmd/matrix-pair
GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -o "$out/matrix-pair-arm64" ./cmd/matrix-pair
CC=aarch64-linux-gnu-gcc CGO_ENABLED=1 GOOS=linux GOARCH=arm64 go build -o "$out/devicegrantd-arm64" ./cmd/devicegrantd
echo "built: $(cd "$out" && ls | tr '\n' ' ')"
