fn main() {
    // Rebuild when bpf-linker changes (it is the linker of this target).
    if let Ok(p) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
