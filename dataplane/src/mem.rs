//! Memory advice for the engine's large tables (flow slab and index, evidence history).
//!
//! Each table is one allocation of tens of MiB touched at random. On 4 KiB pages a fresh
//! engine takes one page fault per 4 KiB it touches (the 64 MiB history alone is 16,384
//! faults, each zeroing a page under the memory cgroup's charge), and every lookup walks a
//! TLB that cannot cover the table. Transparent huge pages turn that into one fault per
//! 2 MiB and a TLB entry per 2 MiB. Linux honours the advice when THP is in `madvise` mode
//! (`/sys/kernel/mm/transparent_hugepage/enabled`, Documentation/admin-guide/mm/transhuge.rst);
//! where THP is off it is a no-op, and nothing depends on it but speed.

const PAGE: usize = 4096;
/// Tables smaller than one huge page gain nothing from the advice.
const HUGE: usize = 2 << 20;

/// Advises the kernel to back the `len` bytes at `ptr` with transparent huge pages. Only the
/// whole 4 KiB pages inside the range are advised (madvise(2) needs an aligned start).
pub fn advise_huge<T>(ptr: *const T, elems: usize) {
    let bytes = elems.saturating_mul(size_of::<T>());
    if bytes < HUGE {
        return;
    }
    let start = (ptr as usize).next_multiple_of(PAGE);
    let end = (ptr as usize + bytes) & !(PAGE - 1);
    if end <= start {
        return;
    }
    // Safety: [start, end) lies inside one live allocation of `bytes` bytes owned by the
    // caller (page-aligned inward); MADV_HUGEPAGE changes only how the kernel backs the
    // pages, never their contents or validity, and fails harmlessly (EINVAL) without THP.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}
