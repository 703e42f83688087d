#!/usr/bin/env bash
# Installs every prerequisite wirewatch needs to build and test, on a fresh Debian 12 machine.
# Idempotent: each step checks first and does nothing when its tool is already there.
# Needs root (apt-get); run as: sudo bash scripts/setup.sh
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh installs Debian packages and must run as root: sudo bash scripts/setup.sh" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Debian packages: the BPF toolchain (llvm/clang 22 for bpf-linker and xsk-rs' libxdp build),
# the real tools the tests drive (iproute2, nftables, conntrack, tcpdump, tshark, ethtool;
# bpftool, with which control/tests/host_mode.rs detaches our TC link as an operator would), and
# chromium, whose headless mode renders the incident reports in control/tests/report.rs.
APT_PKGS=(
    llvm-22-dev libllvm22 clang-22 m4 libelf-dev zlib1g-dev pkg-config
    iproute2 nftables conntrack ethtool tcpdump tshark python3 prometheus bpftool
    chromium
)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "Debian packages present"
fi

# Rust: the eBPF crate builds with nightly + rust-src (build-std for bpfel-unknown-none).
if ! command -v rustup >/dev/null 2>&1; then
    echo "rustup not found: install Rust with rustup first (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing nightly Rust"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi
# The lint policy: rustfmt from nightly (grouped imports are a nightly option), clippy stable.
if ! rustup component list --toolchain nightly --installed | grep -q '^rustfmt'; then
    log "adding rustfmt to nightly"
    rustup component add rustfmt --toolchain nightly
fi
if ! rustup component list --installed | grep -q '^clippy'; then
    log "adding clippy"
    rustup component add clippy
fi

# bpf-linker links the eBPF object; built against Debian's LLVM 22.
if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version 2>/dev/null | grep -q '0.13.0'; then
    log "building bpf-linker 0.13.0 against LLVM 22 (about 2 minutes)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 --locked \
        --no-default-features --features llvm-22 --quiet
else
    log "bpf-linker present"
fi
# cargo-fuzz runs the fuzz targets (fuzz/) for a bounded time in the test suite.
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
log "done"
