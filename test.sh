#!/usr/bin/env bash
# The one test command: ./test.sh  (CI runs exactly this via .ci/run).
# It installs what the tests need when it is missing, then runs the static
# checks and every test with the race detector.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

# Blocks below register their cleanup with on_exit (one EXIT trap for all);
# INT and TERM exit through it too, so nothing is left running.
exit_cmds=()
on_exit() { exit_cmds+=("$1"); }
run_exit_cmds() { for c in "${exit_cmds[@]}"; do eval "$c" || true; done; }
trap run_exit_cmds EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# >>> PostgreSQL (issue 15): a throwaway server for store/postgres >>>
# Debian's postgresql, installed when missing, runs from a temporary
# directory as an unprivileged user (PostgreSQL refuses root, and CI is
# root), listening only on a unix socket there. It stops when this script
# exits, and a watcher stops it should this script be killed outright.
# With DEVICEGRANT_POSTGRES_TESTS=1 the Postgres tests fail rather than skip
# without it, so CI cannot pass without PostgreSQL.
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }
if [ -z "$(pg_bindir)" ]; then
  step "installing postgresql"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Debian's package would create and start a cluster of its own; say no.
  if ! [ -e /etc/postgresql-common/createcluster.conf ]; then
    $sudo mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o Dpkg::Options::=--force-confold postgresql >/dev/null ||
    true
fi
pgbin=$(pg_bindir)
if [ -z "$pgbin" ] || ! [ -x "$pgbin/initdb" ] || ! [ -x "$pgbin/pg_ctl" ]; then
  echo "!! PostgreSQL COULD NOT BE INSTALLED (apt-get install postgresql): the PostgreSQL tests cannot run. FAILING."
  exit 1
fi
step "starting a throwaway PostgreSQL ($pgbin)"
pgdir=$(mktemp -d /tmp/devicegrant-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  chown postgres: "$pgdir"
  as_pg=(runuser -u postgres --)
fi
pg_stop() {
  [ -f "$pgdir/data/postmaster.pid" ] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$pgdir"
}
on_exit pg_stop
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$pgdir/initdb.log" 2>&1 ||
  { cat "$pgdir/initdb.log"; echo "!! initdb failed"; exit 1; }
if ! "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 \
  -o "-c listen_addresses='' -k $pgdir -c max_connections=200 -c fsync=off" start >/dev/null; then
  cat "$pgdir/server.log"; echo "!! PostgreSQL did not start"; exit 1
fi
# Stops the server if this script dies without running its EXIT trap.
(
  trap '' INT TERM
  while kill -0 $$ 2>/dev/null; do sleep 2; done
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop
  rm -rf "$pgdir"
) >/dev/null 2>&1 </dev/null &
"${as_pg[@]}" "$pgbin/createdb" -h "$pgdir" -U postgres devicegrant
export DEVICEGRANT_POSTGRES_URL="postgres:///devicegrant?host=$pgdir&user=postgres&sslmode=disable"
export DEVICEGRANT_POSTGRES_TESTS=1
# <<< PostgreSQL (issue 15) <<<

# >>> third-party clients (interop/): openid-client and others from npm >>>
if ! cmp -s interop/package-lock.json interop/node_modules/.devicegrant-lock; then
  step "npm ci in interop/"
  (cd interop && npm ci --no-audit --no-fund --loglevel=error)
  cp interop/package-lock.json interop/node_modules/.devicegrant-lock
fi
export DEVICEGRANT_INTEROP_TESTS=1
# <<< third-party clients (interop/) <<<

export CGO_ENABLED=1
# >>> toolchain (issue 10, supply chain) >>>
# go.mod's toolchain line names a patched Go release; auto makes every step
# below build and test with it (fetched once through the module proxy),
# even where the machine's go.env says GOTOOLCHAIN=local.
export GOTOOLCHAIN=auto
# <<< toolchain <<<
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

# >>> supply chain (issue 10): tidy modules, no reachable known vulnerability >>>
step "go mod tidy"
if ! go mod tidy -diff; then
  echo "go mod tidy would change go.mod/go.sum (diff above): run go mod tidy and commit the result"
  exit 1
fi

step "govulncheck"
govulncheck_version=v1.1.4
if ! [ -x "$gobin/govulncheck" ]; then
  go install "golang.org/x/vuln/cmd/govulncheck@$govulncheck_version"
fi
vulndb_args=()
if curl -fsS --max-time 10 -o /dev/null https://vuln.go.dev/index/db.json.gz 2>/dev/null; then
  echo "vulnerability database: https://vuln.go.dev"
else
  # vuln.go.dev is out of reach (this machine reaches only the module
  # proxy, Debian and npm). The same database is published as OSV files in
  # the golang.org/x/vulndb module: fetch its newest version through the
  # module proxy and index it with that module's own cmd/indexdb.
  vulndb_dir=$(go mod download -json golang.org/x/vulndb@latest | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  vulndb_ver=$(basename "$vulndb_dir"); vulndb_ver=${vulndb_ver#*@}
  if [ -z "$vulndb_dir" ] || ! [ -d "$vulndb_dir/data/osv" ]; then
    echo "govulncheck: neither vuln.go.dev nor golang.org/x/vulndb through the module proxy is reachable: NO VULNERABILITY CHECK WAS MADE"
    exit 1
  fi
  vulndb_out="$(go env GOMODCACHE)/cache/devicegrant-vulndb/$vulndb_ver"
  if ! [ -f "$vulndb_out/index/db.json" ]; then
    go run "golang.org/x/vulndb/cmd/indexdb@$vulndb_ver" -vulns "$vulndb_dir/data/osv" -out "$vulndb_out.tmp"
    rm -rf "$vulndb_out"; mv "$vulndb_out.tmp" "$vulndb_out"
  fi
  echo "vulnerability database: vuln.go.dev unreachable; using golang.org/x/vulndb@$vulndb_ver from the module proxy (its data/osv), indexed into $vulndb_out"
  vulndb_args=(-db "file://$vulndb_out")
fi
"$gobin/govulncheck" "${vulndb_args[@]}" ./...
# <<< supply chain <<<

# >>> fuzzing (issue 10): each client-metadata and redirect-URI target briefly >>>
# Seeds in devicegrant/clientmeta/testdata/fuzz also run in go test below.
# A count, not a duration: with -fuzztime=10s a busy machine can end a run
# with "context deadline exceeded" although nothing failed.
for target in FuzzParse FuzzStoredMetadata FuzzRedirectURIMatches; do
  step "fuzz $target (100,000 inputs)"
  go test -run='^$' -fuzz="^$target\$" -fuzztime=100000x ./devicegrant/clientmeta/
done
# <<< fuzzing <<<

# TestRollingUpgrade builds an older release from the git history: a
# shallow clone (as some CI systems make) is deepened first, and the test
# is told to fail rather than skip when the release is still missing.
if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
  step "git fetch --unshallow (TestRollingUpgrade builds an older release)"
  git fetch --unshallow --quiet ||
    { echo "!! could not fetch the git history that TestRollingUpgrade needs. FAILING."; exit 1; }
fi
export DEVICEGRANT_UPGRADE_TESTS=1

step "go test -race"
go test -race -count=1 -timeout 15m ./...

# >>> the protocol core on PostgreSQL (issue 15) >>>
# Every test of package devicegrant that builds its server with newEnv runs
# again with the core on the throwaway PostgreSQL started above. The
# cluster tests (several cores on one PostgreSQL schema) ran on PostgreSQL
# in the step before whatever the core store, so they are not run twice.
step "go test -race ./devicegrant/ on PostgreSQL"
DEVICEGRANT_CORE_STORE=postgres go test -race -count=1 -timeout 10m \
  -skip 'TestMultiInstance|TestPollHearsOtherInstance|TestClientTrustHeardByOtherInstance' ./devicegrant/
# <<< the protocol core on PostgreSQL <<<

step "benchmark harness smoke run (no thresholds; README \"Performance\")"
go run ./cmd/devicegrant-bench --smoke

# >>> systemd unit (dist/systemd/): systemd-analyze verify and security >>>
# verify exits 0 even on unknown keys, so any output fails. The exposure
# scores must match what README.md records. If systemd-analyze cannot run
# at all here (it needs no running systemd, but some containers lack its
# pieces), this says so loudly instead of passing in silence.
if ! command -v systemd-analyze >/dev/null; then
  step "installing systemd (for systemd-analyze)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
step "systemd-analyze verify dist/systemd/devicegrantd.service (+ appliance drop-in)"
sd=$(mktemp -d)
mkdir -p "$sd/units/devicegrantd.service.d" "$sd/probe"
printf '[Service]\nType=notify\nExecStart=/bin/true\n' >"$sd/probe/probe.service"
if ! probe=$(SYSTEMD_UNIT_PATH="$sd/probe:" systemd-analyze verify probe.service 2>&1) || [ -n "$probe" ]; then
  echo "!! NOT VERIFIED: systemd-analyze cannot verify even a trivial unit on this machine:"
  echo "$probe"
else
  grep -qx 'ExecStart=/usr/local/bin/devicegrantd serve --config /etc/devicegrantd/config.yaml' dist/systemd/devicegrantd.service ||
    { echo "the unit's ExecStart changed: update test.sh and README.md"; exit 1; }
  go build -tags nomsgpack -o "$sd/devicegrantd" ./cmd/devicegrantd
  cp dist/systemd/devicegrantd.service "$sd/units/"
  # The installed path does not exist here: point ExecStart at the build.
  printf '[Service]\nExecStart=\nExecStart=%s serve --config /etc/devicegrantd/config.yaml\n' "$sd/devicegrantd" \
    >"$sd/units/devicegrantd.service.d/zz-test.conf"
  for variant in plain appliance; do
    [ "$variant" = appliance ] && cp dist/systemd/devicegrantd.service.d/appliance.conf "$sd/units/devicegrantd.service.d/"
    sd_out=$(SYSTEMD_UNIT_PATH="$sd/units:" systemd-analyze verify devicegrantd.service 2>&1) && [ -z "$sd_out" ] ||
      { echo "systemd-analyze verify ($variant):"; echo "$sd_out"; exit 1; }
    score=$(SYSTEMD_UNIT_PATH="$sd/units:" systemd-analyze security --offline=true "$sd/units/devicegrantd.service" 2>&1 |
      sed -n 's/.*Overall exposure level for devicegrantd.service: \([0-9.]* [A-Z]*\).*/\1/p')
    echo "verified ($variant); systemd-analyze security: $score"
    grep -q "^| $variant | $score |" README.md ||
      { echo "README.md's systemd-analyze security table lacks \"| $variant | $score |\": update it"; exit 1; }
  done
fi
rm -rf "$sd"
# <<< systemd unit (dist/systemd/) <<<

step "cross builds for the Raspberry Pi (firmware-notes/README.md)"
out=$(mktemp -d)
on_exit 'rm -rf "$out"'
GOOS=linux GOARCH=arm GOARM=6 CGO_ENABLED=0 go build -o "$out/matrix-pair-armv6" ./cmd/matrix-pair
GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -o "$out/matrix-pair-arm64" ./cmd/matrix-pair
CC=aarch64-linux-gnu-gcc CGO_ENABLED=1 GOOS=linux GOARCH=arm64 go build -tags nomsgpack -o "$out/devicegrantd-arm64" ./cmd/devicegrantd
echo "built: $(cd "$out" && ls | tr '\n' ' ')"
