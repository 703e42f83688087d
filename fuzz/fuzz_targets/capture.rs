//! The pcap/pcapng reader on arbitrary files, plain or behind gzip/zstd (told by the first
//! bytes, as `analyze` opens files): an error or frames, never a panic; every frame of any
//! link type decodes or gets a cause.
#![no_main]
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Box::new(std::io::Cursor::new(data.to_vec()));
    let opened = dataplane::capture::CaptureReader::decompressing(
        "fuzz".into(),
        input,
        Arc::new(AtomicU64::new(0)),
    );
    if let Ok(mut r) = opened {
        for _ in 0..10_000 {
            match r.next_frame() {
                Ok(Some(f)) => {
                    if let Err(o) = dataplane::packet::decode(&f.data, f.orig_len, f.ts_ns, 0) {
                        let _ = dataplane::packet::unread_cause(&f.data, f.orig_len, o);
                    }
                }
                _ => break,
            }
        }
    }
});
