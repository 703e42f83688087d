//! Memory placement hints: huge pages for the engine's large, sequentially filled buffers,
//! and cache-line prefetches.

/// Asks the kernel to back the 2 MiB-aligned part of a fresh, untouched allocation with
/// transparent huge pages where it allows them (`madvise` mode): one fault per 2 MiB instead of
/// one per 4 KiB when the memory is first written. Only a hint: nothing changes where the
/// kernel refuses it.
pub fn advise_huge_pages(ptr: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) & !(HUGE - 1);
    if end > start {
        // SAFETY: the range lies inside one live allocation of the caller; MADV_HUGEPAGE
        // changes how its pages are backed, not their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// Asks the CPU to bring the cache line at `p` into L1 (a hint: nothing on other targets).
#[inline]
pub fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // Safety: a prefetch is a hint and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
