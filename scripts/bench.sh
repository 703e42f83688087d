#!/usr/bin/env bash
# Runs every benchmark (engine replay in CPU time; `wirewatch analyze` against Suricata 7,
# tshark and tcptrace in CPU seconds; XDP program cost vs a bare XDP_PASS; live path vs
# tcpdump; memory per flow; analyze's peak memory under a SYN flood) and rewrites the table in
# bench/RESULTS.md. Installs what it needs on first run. Extra arguments go to wirewatch-bench
# (e.g. --flows 1000000 --packets 10000000 for the full model; --help for all).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    die "the XDP and live benchmarks load BPF programs and create namespaces: run as root, e.g. sudo bash scripts/bench.sh"
fi

# The Debian mirror this machine already uses for its own release: the first URI of an enabled
# deb822 stanza (sources.list.d/*.sources, sources.list(5) "DEB822-STYLE FORMAT") whose Suites
# list the release's codename, else the first one-line `deb` entry for it in sources.list.
# Prints "URI<TAB>SIGNED-BY" (SIGNED-BY may be empty).
debian_mirror() {
    local codename=$1 f found
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        found=$(awk -v suite="$codename" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; signed = ""; deb = 0; match_suite = 0; enabled = 1
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    key = tolower(line); sub(/:.*/, "", key)
                    val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    n = split(val, w, /[ \t]+/)
                    if (key == "uris") uris = w[1]
                    else if (key == "signed-by") signed = w[1]
                    else if (key == "enabled" && tolower(w[1]) == "no") enabled = 0
                    else if (key == "types") { for (j = 1; j <= n; j++) if (w[j] == "deb") deb = 1 }
                    else if (key == "suites") { for (j = 1; j <= n; j++) if (w[j] == suite) match_suite = 1 }
                }
                if (uris != "" && deb && match_suite && enabled) { print uris "\t" signed; exit }
            }' "$f")
        if [ -n "$found" ]; then
            printf '%s\n' "$found"
            return 0
        fi
    done
    if [ -r /etc/apt/sources.list ]; then
        found=$(awk -v suite="$codename" '
            $1 == "deb" {
                i = 2; signed = ""
                if ($i ~ /^\[/) {
                    while (i <= NF) {
                        if ($i ~ /signed-by=/) { s = $i; sub(/.*signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
                        if ($i ~ /\]$/) break
                        i++
                    }
                    i++
                }
                if ($(i + 1) == suite) { print $i "\t" signed; exit }
            }' /etc/apt/sources.list)
        if [ -n "$found" ]; then
            printf '%s\n' "$found"
            return 0
        fi
    fi
    return 1
}

suricata_major() {
    suricata -V 2>/dev/null | sed -n 's/.*version \([0-9]\+\)\..*/\1/p' | head -n1
}

bash scripts/setup.sh
export DEBIAN_FRONTEND=noninteractive
# The baselines: Suricata 7 from bookworm-backports, tcptrace from Debian (tshark: setup.sh).
if ! command -v tcptrace >/dev/null 2>&1; then
    log "installing tcptrace"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends tcptrace >/dev/null
fi
if [ "$(suricata_major)" != 7 ]; then
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell this machine's Debian release (no VERSION_CODENAME in /etc/os-release); install Suricata 7 by hand"
    backports="$codename-backports"
    if ! apt-cache policy suricata 2>/dev/null | grep -q "$backports"; then
        mirror=$(debian_mirror "$codename") || die "no Debian mirror for '$codename' in /etc/apt/sources.list.d/*.sources (URIs:) or /etc/apt/sources.list (deb lines): add this machine's mirror there, or install Suricata 7 by hand"
        uri=${mirror%%$'\t'*}
        signed=${mirror#*$'\t'}
        [ -n "$signed" ] || signed=/usr/share/keyrings/debian-archive-keyring.gpg
        log "enabling $backports from this machine's mirror $uri for Suricata 7"
        cat > /etc/apt/sources.list.d/wirewatch-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: $backports
Components: main
Signed-By: $signed
SRC
    fi
    apt-get update -qq
    log "installing suricata from $backports"
    apt-get install -y -qq --no-install-recommends -t "$backports" suricata >/dev/null
    [ "$(suricata_major)" = 7 ] || die "suricata -V does not report version 7 after the install: $(suricata -V 2>&1 | head -n1)"
fi
[ -r /etc/suricata/rules/stream-events.rules ] || die "/etc/suricata/rules/stream-events.rules is missing: the suricata package should ship it (dpkg -L suricata | grep rules)"

export PATH="$HOME/.cargo/bin:$PATH"
target="${CARGO_TARGET_DIR:-target}"
# With --wirewatch PATH the given binary is measured and only the bench itself is built.
extra=()
case " $* " in
    *" --wirewatch"*)
        log "building the bench (release) into $target"
        cargo build --release --quiet -p bench
        ;;
    *)
        log "building wirewatch and the bench (release) into $target"
        cargo build --release --quiet -p control -p bench
        extra=(--wirewatch "$target/release/wirewatch")
        ;;
esac
exec "$target/release/wirewatch-bench" "${extra[@]}" "$@"
