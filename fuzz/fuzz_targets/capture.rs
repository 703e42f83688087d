//! The pcap/pcapng reader on arbitrary files: an error or frames, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = dataplane::capture::CaptureReader::new("fuzz".into(), data) {
        for _ in 0..10_000 {
            match r.next_frame() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
});
