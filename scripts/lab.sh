#!/usr/bin/env bash
# wirewatch's main job on its built-in lab: four real incidents rebuilt in network namespaces,
# watched live through XDP + AF_XDP on span ports, each diagnosed with its evidence.
# Installs what it needs on first run. Extra arguments go to `wirewatch lab`
# (e.g. --incident conntrack-invalid, --control, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the lab creates network namespaces and attaches XDP programs: run it as root, e.g. sudo bash scripts/lab.sh" >&2
    exit 1
fi
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "[lab] building wirewatch (release)" >&2
cargo build --release --quiet -p control
exec target/release/wirewatch lab "${@:---incident=all}"
