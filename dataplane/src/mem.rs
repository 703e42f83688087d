//! Memory placement hints for the engine's large, sequentially filled buffers.

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
