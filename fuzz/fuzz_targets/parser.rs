//! The shared header parser and the TCP decoder on arbitrary frames: never a panic, and a
//! frame the parser accepts decodes consistently.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First two bytes: how much longer the frame was on the wire than captured.
    if data.len() < 2 {
        return;
    }
    let extra = u16::from_le_bytes([data[0], data[1]]) as usize;
    let frame = &data[2..];
    let wire = frame.len() + extra;
    let r = dataplane_common::classify(frame, wire);
    // The fast path for common shapes answers as the field-by-field reference does.
    assert_eq!(r, dataplane_common::classify_reference(frame, wire));
    if let Ok(o) = r {
        assert!(o.l4_off as usize + 20 <= frame.len());
        assert!(o.l4_off as u32 + o.tcp_hdr_len as u32 <= o.ip_end);
        let p = dataplane::packet::decode(frame, wire as u32, 0, 0).expect("classify accepted it");
        assert_eq!(p.payload_len, o.payload_len());
    }
});
