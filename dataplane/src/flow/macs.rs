//! MAC addresses as 12-bit ids, per table: a flow record keeps four MACs (source and next hop
//! of each direction) in 6 bytes instead of 24. A span or tap sees few distinct MACs (routers,
//! the hosts of one segment); past [`MacTable::CAPACITY`] new addresses get id 0, "unknown",
//! which the detectors already treat like the all-zero MAC of a capture without Ethernet
//! headers, and the overflow is counted.

/// A MAC address's id in its engine's [`MacTable`]. 0: all-zero or unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacId(pub u16);

impl MacId {
    pub const UNKNOWN: MacId = MacId(0);
    pub fn is_known(self) -> bool {
        self.0 != 0
    }
}

pub struct MacTable {
    /// Address by id; id 0 is the all-zero address.
    macs: Vec<[u8; 6]>,
    /// Open addressing: id per slot (0: empty), 2 × CAPACITY slots.
    slots: Box<[u16]>,
    /// Addresses that got no id because the table was full.
    pub overflowed: u64,
    /// The two ids returned last.
    recent: [u16; 2],
}

impl Default for MacTable {
    fn default() -> Self {
        Self::new()
    }
}

impl MacTable {
    /// Ids are 12 bits wide.
    pub const CAPACITY: usize = (1 << 12) - 1;
    const SLOTS: usize = 1 << 13;

    pub fn new() -> Self {
        Self {
            macs: vec![[0; 6]],
            slots: vec![0u16; Self::SLOTS].into_boxed_slice(),
            overflowed: 0,
            recent: [0; 2],
        }
    }

    #[inline]
    fn slot_of(mac: [u8; 6]) -> usize {
        let v = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
        (v.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 51) as usize & (Self::SLOTS - 1)
    }

    /// The id of `mac`, assigned on first sight.
    #[inline]
    pub fn intern(&mut self, mac: [u8; 6]) -> MacId {
        if mac == [0; 6] {
            return MacId::UNKNOWN;
        }
        // A span carries few MACs, mostly the same two: check the last two ids first.
        for id in self.recent {
            if self.macs[id as usize] == mac && id != 0 {
                return MacId(id);
            }
        }
        let id = self.intern_slow(mac);
        if id.is_known() {
            self.recent = [id.0, self.recent[0]];
        }
        id
    }

    fn intern_slow(&mut self, mac: [u8; 6]) -> MacId {
        let mut i = Self::slot_of(mac);
        loop {
            let id = self.slots[i];
            if id == 0 {
                break;
            }
            if self.macs[id as usize] == mac {
                return MacId(id);
            }
            i = (i + 1) & (Self::SLOTS - 1);
        }
        if self.macs.len() > Self::CAPACITY {
            self.overflowed += 1;
            return MacId::UNKNOWN;
        }
        let id = self.macs.len() as u16;
        self.macs.push(mac);
        self.slots[i] = id;
        MacId(id)
    }

    /// The address behind `id` (all zeros for unknown).
    pub fn get(&self, id: MacId) -> [u8; 6] {
        self.macs.get(id.0 as usize).copied().unwrap_or([0; 6])
    }

    pub fn len(&self) -> usize {
        self.macs.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_overflow_is_unknown_and_counted() {
        let mut t = MacTable::new();
        assert_eq!(t.intern([0; 6]), MacId::UNKNOWN);
        let a = t.intern([2, 0, 0, 0, 0, 1]);
        let b = t.intern([2, 0, 0, 0, 0, 2]);
        assert_ne!(a, b);
        assert_eq!(t.intern([2, 0, 0, 0, 0, 1]), a);
        assert_eq!(t.get(b), [2, 0, 0, 0, 0, 2]);
        for i in 0..5000u32 {
            let m = i.to_be_bytes();
            t.intern([4, 0, m[0], m[1], m[2], m[3]]);
        }
        assert_eq!(t.len(), MacTable::CAPACITY);
        assert_eq!(t.overflowed, 5000 - (MacTable::CAPACITY as u64 - 2));
        assert_eq!(t.intern([2, 0, 0, 0, 0, 2]), b, "known addresses keep their ids when full");
    }
}
