//! The vantages of a process: the inputs named at start (interfaces, capture files) and the
//! remote-mirror sessions found inside them. Two switches mirroring into one collector port
//! are two points of view of the network, as two interfaces are: each session (its tunnel,
//! its session ID or VNI, the mirror's outer source address) is a vantage of its own, named
//! after its input, and numbered once for every worker of the process.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};

use dataplane_common::{TcpOffsets, Tunnel};

use crate::flow::MAX_VANTAGES;

/// A mirror session as a frame shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    input: u16,
    tunnel: u8,
    session: u32,
    sender: IpAddr,
}

#[derive(Default)]
struct Sessions {
    by_key: HashMap<SessionKey, u16>,
    /// Names and inputs of the session vantages, by index minus the number of inputs.
    names: Vec<String>,
    inputs: Vec<u16>,
}

struct Inner {
    inputs: Vec<String>,
    sessions: Mutex<Sessions>,
    /// Inputs plus sessions: read on every packet, so kept beside the lock.
    count: AtomicUsize,
    /// Frames of sessions found after [`MAX_VANTAGES`] vantages: kept at their input's vantage.
    overflowed: AtomicU64,
}

/// Shared by every engine and reader of a process (cloning shares it).
#[derive(Clone)]
pub struct Vantages(Arc<Inner>);

impl Default for Vantages {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl From<Vec<String>> for Vantages {
    fn from(inputs: Vec<String>) -> Self {
        Self::new(inputs)
    }
}

impl std::fmt::Debug for Vantages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Vantages {
    /// The inputs, by index (`--iface` order, or the files' order).
    pub fn new(inputs: Vec<String>) -> Self {
        let count = AtomicUsize::new(inputs.len());
        Self(Arc::new(Inner {
            inputs,
            sessions: Mutex::default(),
            count,
            overflowed: AtomicU64::new(0),
        }))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // The table stays consistent whatever a panicking holder did (one insert at a time).
        self.0.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Vantages so far: inputs and the sessions found in them.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.count.load(Relaxed)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs named at start.
    pub fn inputs(&self) -> &[String] {
        &self.0.inputs
    }

    /// The name of vantage `v` as events, evidence and the summary show it.
    pub fn name(&self, v: u16) -> String {
        let i = v as usize;
        if let Some(n) = self.0.inputs.get(i) {
            return n.clone();
        }
        let s = self.table();
        s.names.get(i - self.0.inputs.len()).cloned().unwrap_or_else(|| format!("vantage{v}"))
    }

    /// Every vantage's name, by index.
    pub fn names(&self) -> Vec<String> {
        let s = self.table();
        self.0.inputs.iter().chain(&s.names).cloned().collect()
    }

    /// The input (interface or file) vantage `v` was found in: itself for an input.
    pub fn input_of(&self, v: u16) -> u16 {
        let i = v as usize;
        if i < self.0.inputs.len() {
            return v;
        }
        self.table().inputs.get(i - self.0.inputs.len()).copied().unwrap_or(v)
    }

    /// The mirror sessions found so far: (vantage, its name, the input it was found in).
    pub fn sessions(&self) -> Vec<(u16, String, u16)> {
        let s = self.table();
        let first = self.0.inputs.len();
        s.names
            .iter()
            .zip(&s.inputs)
            .enumerate()
            .map(|(i, (n, &at))| ((first + i) as u16, n.clone(), at))
            .collect()
    }

    /// Frames of sessions beyond the [`MAX_VANTAGES`] limit, counted at their input instead.
    pub fn overflowed(&self) -> u64 {
        self.0.overflowed.load(Relaxed)
    }

    /// The vantage of a frame that arrived on `input` inside the tunnel `o` describes: the
    /// session's own, numbered on first sight.
    pub fn of_session(&self, input: u16, o: &TcpOffsets, frame: &[u8]) -> u16 {
        let Some(sender) = outer_source(o, frame) else { return input };
        let key = SessionKey { input, tunnel: o.tunnel, session: o.session, sender };
        let mut s = self.table();
        if let Some(&v) = s.by_key.get(&key) {
            return v;
        }
        let v = self.0.inputs.len() + s.names.len();
        if v >= MAX_VANTAGES {
            self.0.overflowed.fetch_add(1, Relaxed);
            return input;
        }
        let base = self.0.inputs.get(input as usize).map_or("?", String::as_str);
        s.names.push(session_name(base, &key));
        s.inputs.push(input);
        s.by_key.insert(key, v as u16);
        self.0.count.store(v + 1, Relaxed);
        log::info!("mirror session {} is vantage {v}", s.names[v - self.0.inputs.len()]);
        v as u16
    }
}

/// The outer IP header's source: the switch or host that sends the mirror.
fn outer_source(o: &TcpOffsets, frame: &[u8]) -> Option<IpAddr> {
    let at = o.outer_l3_off as usize;
    match frame.get(at)? >> 4 {
        4 => {
            let b: [u8; 4] = frame.get(at + 12..at + 16)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = frame.get(at + 8..at + 24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// `INPUT/KIND:SESSION@SENDER`, e.g. `mon0/erspan2:12@192.0.2.1`: no spaces, so that
/// `--serial` can name it as written.
fn session_name(input: &str, k: &SessionKey) -> String {
    let kind = match Tunnel::from_u8(k.tunnel) {
        Tunnel::None => "tunnel",
        Tunnel::Gre => "gre",
        Tunnel::GreEthernet => "teb",
        Tunnel::ErspanI => "erspan1",
        Tunnel::ErspanII => "erspan2",
        Tunnel::ErspanIII => "erspan3",
        Tunnel::Vxlan => "vxlan",
        Tunnel::Geneve => "geneve",
    };
    format!("{input}/{kind}:{}@{}", k.session, k.sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(tunnel: Tunnel, session: u32) -> TcpOffsets {
        TcpOffsets { tunnel: tunnel as u8, session, outer_l3_off: 14, ..TcpOffsets::default() }
    }

    fn ipv4_frame(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[14] = 0x45;
        f[26..30].copy_from_slice(&src);
        f
    }

    #[test]
    fn each_session_and_sender_is_a_vantage_of_its_own_numbered_once() {
        let v = Vantages::new(vec!["mon0".into(), "mon1".into()]);
        let a = ipv4_frame([192, 0, 2, 1]);
        let b = ipv4_frame([192, 0, 2, 2]);
        let s12 = v.of_session(0, &offsets(Tunnel::ErspanII, 12), &a);
        assert_eq!(s12, 2);
        assert_eq!(v.of_session(0, &offsets(Tunnel::ErspanII, 12), &a), 2, "same session");
        assert_eq!(v.of_session(0, &offsets(Tunnel::ErspanII, 13), &a), 3, "another ID");
        assert_eq!(v.of_session(0, &offsets(Tunnel::ErspanII, 12), &b), 4, "another switch");
        assert_eq!(v.of_session(1, &offsets(Tunnel::ErspanII, 12), &a), 5, "another input");
        assert_eq!(v.len(), 6);
        assert_eq!(v.name(2), "mon0/erspan2:12@192.0.2.1");
        assert_eq!(v.name(5), "mon1/erspan2:12@192.0.2.1");
        assert_eq!(v.input_of(5), 1);
        assert_eq!(v.input_of(1), 1);
        assert_eq!(v.names().len(), 6);
        // A frame whose outer header is unreadable stays at its input.
        assert_eq!(v.of_session(1, &offsets(Tunnel::Vxlan, 1), &[0u8; 20]), 1);
    }

    #[test]
    fn sessions_beyond_the_limit_stay_at_their_input_and_are_counted() {
        let v = Vantages::new(vec!["mon0".into()]);
        let f = ipv4_frame([10, 0, 0, 1]);
        for s in 0..(MAX_VANTAGES as u32 + 10) {
            let got = v.of_session(0, &offsets(Tunnel::Vxlan, s), &f);
            assert!((got as usize) < MAX_VANTAGES);
        }
        assert_eq!(v.len(), MAX_VANTAGES);
        assert_eq!(v.overflowed(), 11);
    }
}
