//! Sensor health: mirror_duplicate (span/tap duplication, removed before any detector runs)
//! and capture_gap (our own loss; see the engine's loss epoch).
use crate::packet::TcpPacket;

/// Recently seen frames per vantage, direct-mapped by signature: a frame equal in IP-ID, SEQ,
/// ACK, flags, length, window and ports to one seen within the window is a span duplicate.
pub struct MirrorDedup {
    slots: Vec<(u64, u64)>, // (signature, ts_ns)
    window_ns: u64,
}

impl MirrorDedup {
    pub fn new(slots: usize, window_ns: u64) -> Self {
        Self { slots: vec![(0, 0); slots.next_power_of_two()], window_ns }
    }

    /// Forgets every frame seen (time went back: they belong to another timeline).
    pub fn clear(&mut self) {
        self.slots.fill((0, 0));
    }

    fn signature(p: &TcpPacket) -> u64 {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9).rotate_left(31);
        mix(p.seq.0 as u64 | (p.ack.0 as u64) << 32);
        mix(p.ip_id as u64
            | (p.flags as u64) << 16
            | (p.window as u64) << 24
            | (p.vantage as u64) << 40);
        mix(p.payload_len as u64 | (p.sport as u64) << 32 | (p.dport as u64) << 48);
        if let Some((v, e)) = p.opts.timestamp {
            mix(v as u64 | (e as u64) << 32);
        }
        let src = u128::from_be_bytes(p.key.addr_bytes(p.side as usize));
        mix(src as u64 ^ (src >> 64) as u64);
        h | 1
    }

    /// True if `p` duplicates a frame seen within the window (then it must be dropped).
    pub fn is_duplicate(&mut self, p: &TcpPacket) -> bool {
        let sig = Self::signature(p);
        let i = (sig as usize) & (self.slots.len() - 1);
        let (s, t) = self.slots[i];
        // Either way in time: a frame earlier than its twin is no duplicate of a much later
        // one (a capture whose time went back replays old frames, it does not mirror them).
        if s == sig && p.ts_ns.abs_diff(t) <= self.window_ns {
            return true;
        }
        self.slots[i] = (sig, p.ts_ns);
        false
    }
}
