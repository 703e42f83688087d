#!/usr/bin/env bash
# Runs wirewatch's whole test suite, privileged tests included (they need root: netns, XDP,
# AF_XDP). Installs what it needs on first run. Fails if any privileged test was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "the test suite includes privileged tests (netns, XDP, AF_XDP): run it as root, e.g. sudo bash scripts/test.sh" >&2
    exit 1
fi
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export WIREWATCH_REQUIRE_PRIVILEGED=1
export RUST_BACKTRACE=1

# The lint policy (rustfmt.toml, [workspace.lints] in Cargo.toml) holds before any test runs.
cargo +nightly fmt --all --check || { echo "FAIL: cargo fmt: run 'cargo +nightly fmt --all'" >&2; exit 1; }
cargo clippy --release --all-targets -- -D warnings || { echo "FAIL: clippy findings (see above)" >&2; exit 1; }

# Namespaces that exist before the suite are not ours; any new one left after it is a bug.
netns_before=$(ip netns list | awk '{print $1}' | sort)
log=$(mktemp)
# The tests' captures, events and evidence (a few GB over the suite) go to a directory of
# their own, removed when the suite passes and kept, with its path printed, when it fails.
TMPDIR=$(mktemp -d -t wirewatch-tests.XXXXXX)
chmod 755 "$TMPDIR"
export TMPDIR
trap 'rm -f "$log"; if [ "${suite_passed:-0}" = 1 ]; then rm -rf "$TMPDIR"; else echo "test files kept in $TMPDIR" >&2; fi' EXIT
# Release build: the live tests watch real traffic at rate, as the product would.
set +e
cargo test --release --no-fail-fast 2>&1 | tee "$log"   # default members: the eBPF crate is built by dataplane/build.rs
status=${PIPESTATUS[0]}
set -e
if grep -q '^SKIPPED ' "$log"; then
    echo "FAIL: privileged tests were skipped:" >&2
    grep '^SKIPPED ' "$log" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    exit "$status"
fi
# The .deb an operator installs, from the release build above: lintian, dpkg -i, what it
# installs (man pages, completions, unit hardening score <= 3, explain), then purged.
WIREWATCH_RELEASE_BUILT=1 bash scripts/package.sh || { echo "FAIL: the package check (above)" >&2; exit 1; }
# Fuzzing, bounded: the header parser, the capture reader, the whole engine, the config loader
# and the HTTP server (request bytes through hyper to the handlers) on arbitrary
# input. Any crash fails the suite (libFuzzer exits non-zero and keeps the reproducer in
# fuzz/artifacts/).
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
for target in parser capture engine config http_request; do
    echo "fuzzing $target for ${FUZZ_SECONDS}s"
    (cd fuzz && cargo +nightly fuzz run --release "$target" -- -max_total_time="$FUZZ_SECONDS" 2>&1 | grep -E '^(Done|==|SUMMARY|thread)' ) || { echo "FAIL: fuzz target $target crashed" >&2; exit 1; }
done

passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
if [ "$passed" -eq 0 ]; then
    echo "FAIL: no test ran" >&2
    exit 1
fi
leftover=$(comm -13 <(echo "$netns_before") <(ip netns list | awk '{print $1}' | sort))
if [ -n "$leftover" ]; then
    echo "FAIL: tests left network namespaces behind:" >&2
    echo "$leftover" >&2
    exit 1
fi
suite_passed=1
echo "all tests passed ($passed)"
