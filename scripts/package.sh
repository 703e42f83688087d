#!/usr/bin/env bash
# Builds the wirewatch .deb from the release build, checks it with lintian, installs it and
# checks what an operator gets (binary, man pages, completions, unit and its hardening score,
# config, dashboard and alert rules, `wirewatch explain` for every catalog kind), then purges
# it. Any failure fails the script. Called by scripts/test.sh after the cargo tests; runs
# alone as: sudo bash scripts/package.sh   (the .deb is left in target/debian/).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[package] %s\n' "$*" >&2; }
fail() { printf 'FAIL: package: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "installs and removes the package: run as root (sudo bash scripts/package.sh)"
export PATH="$HOME/.cargo/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

# Tools: lintian from Debian, cargo-deb pinned.
CARGO_DEB_VERSION=3.8.0
if ! command -v systemd-analyze >/dev/null 2>&1; then
    log "installing systemd (for systemd-analyze)"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
if ! command -v lintian >/dev/null 2>&1; then
    log "installing lintian"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    log "installing cargo-deb $CARGO_DEB_VERSION (about 2 minutes)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

# An installed wirewatch is an operator's: never replace or purge it.
if dpkg-query -W -f='${Status}' wirewatch 2>/dev/null | grep -q 'installed'; then
    fail "a wirewatch package is already installed here; remove it first (dpkg --purge wirewatch)"
fi

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
version=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "control"))')
# The version scheme (README, "The Debian package"): tag vX.Y.Z = workspace version X.Y.Z = the top
# entry of deploy/debian/changelog, X.Y.Z-N (N counts packaging-only revisions).
deb_version=$(head -1 deploy/debian/changelog | sed -n 's/^wirewatch (\([^)]*\)).*/\1/p')
[ "${deb_version%-*}" = "$version" ] || fail "deploy/debian/changelog's top entry is $deb_version but the workspace version is $version: add a changelog entry for $version-1"

# The release binary: scripts/test.sh has just built it (`cargo test --release` builds the
# binary the integration tests run) and says so; alone, this script builds it. (A `cargo build
# -p control` after the workspace's `cargo test` may resolve dependency features differently
# and relink the whole binary.) Then the man pages and completions from it.
if [ "${WIREWATCH_RELEASE_BUILT:-0}" != 1 ] || [ ! -x "$target/release/wirewatch" ]; then
    cargo build --release -p control --bin wirewatch --quiet
fi
assets="$target/release/wirewatch-package"
rm -rf "$assets"
"$target/release/wirewatch" generate man "$assets/man"
"$target/release/wirewatch" generate completions "$assets/completions"
gzip -9n "$assets"/man/*.1

rm -rf "$target/debian"
# --strip: the release profile keeps debug info (debug = 1); the package ships stripped.
# --fast: lighter xz, a larger .deb in less time.
cargo deb -p control --no-build --strip --fast --deb-version "$deb_version" --output "$target/debian/" --quiet
deb=$(ls "$target"/debian/wirewatch_"$deb_version"_*.deb)
log "built $deb"

# Lintian: errors, warnings and info tags fail; deploy/debian/lintian-overrides explains each
# tag that is accepted. One check is left out: spelling-error-in-binary reads the stripped
# binary's machine code and constants as text, and any build can hold a byte run that looks
# like a misspelt word ("wTH" appeared in one); an override cannot follow it (lintian flags an
# override that matches nothing), and the messages it would check are in the source.
lintian --fail-on error,warning,info --info --display-level '>=info' \
    --suppress-tags spelling-error-in-binary "$deb" || fail "lintian findings (above)"
log "lintian: clean"

installed=0
netns="wwpkg$$"
cleanup() {
    ip netns del "$netns" 2>/dev/null || true
    if [ "$installed" -eq 1 ]; then
        dpkg --purge wirewatch >/dev/null || echo "FAIL: package: dpkg --purge wirewatch failed" >&2
    fi
    rm -rf "$tmp"
}
tmp=$(mktemp -d)
trap cleanup EXIT
installed=1
dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"

# What an operator finds.
[ "$(command -v wirewatch)" = /usr/bin/wirewatch ] || fail "wirewatch is not /usr/bin/wirewatch on PATH"
[ "$(wirewatch --version)" = "wirewatch $version" ] || fail "wirewatch --version says '$(wirewatch --version)', expected 'wirewatch $version'"
for page in wirewatch wirewatch-run wirewatch-analyze wirewatch-lab wirewatch-profile wirewatch-explain; do
    man -w "$page" >/dev/null 2>&1 || fail "man $page: no page installed"
done
MANWIDTH=80 man wirewatch-run 2>/dev/null | grep -q -- '--iface' || fail "man wirewatch-run does not document --iface"
MANWIDTH=80 man wirewatch 2>"$tmp/man.err" | grep -q 'explain' || fail "man wirewatch does not list explain"
[ ! -s "$tmp/man.err" ] || fail "man wirewatch warns: $(cat "$tmp/man.err")"
# bash: the completion proposes subcommands; zsh and fish: the files where those shells look.
words=$(bash -c 'source /usr/share/bash-completion/completions/wirewatch
    COMP_WORDS=(wirewatch ex); COMP_CWORD=1; COMP_LINE="wirewatch ex"; COMP_POINT=${#COMP_LINE}
    _wirewatch wirewatch ex wirewatch; echo "${COMPREPLY[*]}"')
[ "$words" = explain ] || fail "bash completion of 'wirewatch ex' gave '$words', expected 'explain'"
grep -q '#compdef wirewatch' /usr/share/zsh/vendor-completions/_wirewatch || fail "zsh completion missing"
! grep -q generate /usr/share/bash-completion/completions/wirewatch /usr/share/zsh/vendor-completions/_wirewatch /usr/share/fish/vendor_completions.d/wirewatch.fish \
    || fail "the completions offer the hidden generate subcommand"
grep -q 'complete -c wirewatch' /usr/share/fish/vendor_completions.d/wirewatch.fish || fail "fish completion missing"
# The unit and its hardening.
unit=/usr/lib/systemd/system/wirewatch.service
[ -f "$unit" ] || fail "$unit not installed"
cmp -s "$unit" deploy/systemd/wirewatch.service || fail "$unit differs from deploy/systemd/wirewatch.service"
systemd-analyze verify "$unit" 2>&1 | tee "$tmp/verify" >&2
[ ! -s "$tmp/verify" ] || fail "systemd-analyze verify $unit (above)"
score=$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for wirewatch.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no exposure score from systemd-analyze security --offline=true $unit"
awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }' || fail "systemd-analyze security scores the unit $score, above 3"
log "unit exposure: $score"
# The config is a conffile the unit reads, and it parses (asking for the interface).
dpkg-query -W -f='${Conffiles}\n' wirewatch | grep -q '^ /etc/wirewatch/wirewatch.toml ' || fail "/etc/wirewatch/wirewatch.toml is not a conffile"
grep -q -- '--config /etc/wirewatch/wirewatch.toml' "$unit" || fail "the unit does not read /etc/wirewatch/wirewatch.toml"
set +e
wirewatch run --config /etc/wirewatch/wirewatch.toml >/dev/null 2>"$tmp/run.err"
status=$?
set -e
[ "$status" -eq 2 ] && grep -q 'sets no interface' "$tmp/run.err" || fail "the shipped config: exit $status, $(cat "$tmp/run.err")"
# Every file of deploy/grafana and deploy/prometheus, as it is in the tree.
while IFS= read -r f; do
    cmp -s "deploy/$f" "/usr/share/wirewatch/$f" || fail "/usr/share/wirewatch/$f missing or differs from deploy/$f"
done < <(cd deploy && find grafana prometheus -type f | sort)
# `wirewatch explain` covers every kind of the design catalog.
catalog=../shared/DETECTIONS.md
[ -f "$catalog" ] || fail "$catalog not found (the design catalog lives beside the repository)"
kinds=$(sed -n 's/^| `\([a-z_]*\)` |.*/\1/p' "$catalog")
[ "$(echo "$kinds" | wc -l)" -ge 20 ] || fail "parsed only $(echo "$kinds" | wc -w) kinds from $catalog"
wirewatch explain > "$tmp/list" || fail "wirewatch explain: exit $?"
for k in $kinds; do
    wirewatch explain "$k" > "$tmp/explain" 2>&1 || fail "wirewatch explain $k: $(cat "$tmp/explain")"
    grep -q '^Rule$' "$tmp/explain" || fail "wirewatch explain $k prints no rule"
    grep -q "^  $k\b" "$tmp/list" || fail "wirewatch explain does not list $k"
done
log "explain: $(echo "$kinds" | wc -w) catalog kinds"
# The installed (stripped) binary attaches its embedded XDP program and binds AF_XDP: one
# second on a veth inside a namespace of its own.
ip netns add "$netns"
ip -n "$netns" link add wwpkg0 type veth peer name wwpkg1
ip -n "$netns" link set lo up
ip -n "$netns" link set wwpkg0 up
ip -n "$netns" link set wwpkg1 up
ip netns exec "$netns" wirewatch run --iface wwpkg0 --duration 1 --xdp-mode generic \
    --evidence-dir "$tmp/evidence" --summary-json "$tmp/summary.json" >/dev/null 2>"$tmp/run.err" \
    || fail "the installed wirewatch could not run on a veth: $(cat "$tmp/run.err")"
grep -q '"xdp_mode": "generic"' "$tmp/summary.json" || fail "wirewatch run wrote no summary of an attached queue: $(cat "$tmp/summary.json")"
ip netns del "$netns"

installed=0
dpkg --purge wirewatch >/dev/null || fail "dpkg --purge wirewatch"
[ ! -e /usr/bin/wirewatch ] && [ ! -e "$unit" ] && [ ! -e /etc/wirewatch ] || fail "dpkg --purge left files behind"
echo "package check passed: $deb (lintian clean, unit exposure $score)"
