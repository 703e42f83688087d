#!/usr/bin/env bash
# Runs all four benchmarks (engine replay vs Suricata/tshark/tcptrace, XDP program cost vs a
# bare XDP_PASS, live path vs tcpdump, memory per flow) and rewrites the table in
# bench/RESULTS.md. Installs what it needs on first run. Extra arguments go to wirewatch-bench
# (e.g. --flows 1000000 --packets 10000000 for the full model; --help for all).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the XDP and live benchmarks load BPF programs and create namespaces: run as root, e.g. sudo bash scripts/bench.sh" >&2
    exit 1
fi
bash scripts/setup.sh
export DEBIAN_FRONTEND=noninteractive
# The baselines: Suricata 7 from bookworm-backports, tcptrace from Debian (tshark: setup.sh).
if ! command -v suricata >/dev/null 2>&1 || ! command -v tcptrace >/dev/null 2>&1; then
    if ! apt-cache policy suricata | grep -q 'bpo12'; then
        echo "[bench] enabling bookworm-backports for Suricata 7" >&2
        cat > /etc/apt/sources.list.d/wirewatch-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq
    fi
    echo "[bench] installing suricata (backports) and tcptrace" >&2
    apt-get install -y -qq --no-install-recommends -t bookworm-backports suricata tcptrace >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
echo "[bench] building (release)" >&2
cargo build --release --quiet -p control -p bench
exec target/release/wirewatch-bench "$@"
