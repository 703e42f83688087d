//! Builds the XDP program (dataplane-ebpf, target bpfel-unknown-none, nightly + bpf-linker)
//! and leaves the object in OUT_DIR, where `dataplane::loader` embeds it.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("dataplane has no parent directory"))?
        .join("dataplane-ebpf");
    let root = root.to_str().context("non-UTF-8 path to dataplane-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "dataplane-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program failed; run `sudo bash scripts/setup.sh` to install nightly rust-src and bpf-linker")
}
