//! Loads the embedded XDP program, sets its `.rodata` configuration, attaches it and exposes
//! its maps (XSKMAP, outcome counters). In host mode it loads the XDP program that copies
//! headers into a ring buffer instead, and the TC egress program beside it.
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf, XskMap};
use aya::programs::tc::{SchedClassifierLinkId, TcAttachOptions};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use dataplane_common::{
    FilterValue, Outcome, XdpConfig, CONFIG_GLOBAL_NAME, COUNTERS_MAP_NAME, FILTER_PORTS_MAP_NAME,
    FILTER_PREFIXES_MAP_NAME, FILTER_VLANS_MAP_NAME, HOST_RING_MAP_NAME, HOST_TC_PROGRAM_NAME,
    HOST_XDP_PROGRAM_NAME, OUTCOME_COUNT, XDP_HEAD_PROGRAM_NAME, XDP_PROGRAM_NAME, XSK_MAP_NAME,
};

use crate::filter::Filter;

/// The XDP object built by build.rs.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wirewatch-xdp"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the XDP program failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("XDP map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
}

/// A loaded (not yet attached) XDP program with its maps; in host mode also the TC egress
/// program.
pub struct XdpProgram {
    ebpf: Ebpf,
    pub config: XdpConfig,
    link: Option<XdpLinkId>,
    /// The XDP program's name in the object: the span or the host-mode one.
    xdp_name: &'static str,
    /// Host mode's TC egress link.
    egress_link: Option<SchedClassifierLinkId>,
    /// Whether the span program writes its metadata in front of each frame
    /// ([`XDP_HEAD_PROGRAM_NAME`]).
    meta_in_head: bool,
    /// Why the program using the metadata area was refused, when `Auto` fell back from it.
    area_refused: Option<String>,
}

/// Where the span program puts each redirected frame's [`XdpMeta`](dataplane_common::XdpMeta).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetaPlacement {
    /// In the metadata area before the frame, or in front of the frame where the kernel
    /// refuses that.
    #[default]
    Auto,
    /// In the metadata area before the frame (`bpf_xdp_adjust_meta`); an error where the
    /// kernel refuses it.
    Area,
    /// In front of the frame, as its first `XDP_META_LEN` bytes (`bpf_xdp_adjust_head`): also
    /// for drivers that accept the program but refuse the metadata area as it runs.
    Head,
}

/// The ring of a span-mode load: the map exists in the object either way, and nothing writes
/// it (the size must be a power of two and a multiple of the page size).
const UNUSED_RING_BYTES: u32 = 4096;

impl XdpProgram {
    /// Loads and verifies the program with `config` baked into `.rodata`.
    pub fn load(config: XdpConfig) -> Result<Self, LoadError> {
        Self::load_filtered(config, None)
    }

    /// As [`Self::load`], evaluating `filter` on every TCP frame: its truth table and VLAN bits
    /// go into `.rodata`, its prefixes, ports and VLAN IDs into the program's tables.
    pub fn load_filtered(config: XdpConfig, filter: Option<&Filter>) -> Result<Self, LoadError> {
        Self::load_mode(config, filter, None, MetaPlacement::Auto)
    }

    /// As [`Self::load_filtered`], with the metadata where `placement` says.
    pub fn load_placed(
        config: XdpConfig,
        filter: Option<&Filter>,
        placement: MetaPlacement,
    ) -> Result<Self, LoadError> {
        Self::load_mode(config, filter, None, placement)
    }

    /// Host mode: the XDP program that copies each TCP frame's headers into a ring of
    /// `ring_bytes` (a power of two, a multiple of the page size) and passes every frame on,
    /// and the TC egress program that does the same for outgoing frames
    /// ([`Self::attach_egress`]).
    pub fn load_host(
        config: XdpConfig,
        filter: Option<&Filter>,
        ring_bytes: u32,
    ) -> Result<Self, LoadError> {
        Self::load_mode(config, filter, Some(ring_bytes), MetaPlacement::Auto)
    }

    fn load_mode(
        mut config: XdpConfig,
        filter: Option<&Filter>,
        host_ring_bytes: Option<u32>,
        placement: MetaPlacement,
    ) -> Result<Self, LoadError> {
        let tables = filter.map(Filter::tables);
        if let Some(t) = &tables {
            config.filter = 1;
            config.filter_truth = t.truth;
            config.filter_vlan_any = u32::from(t.vlan_any);
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(CONFIG_GLOBAL_NAME, &config, true)
            .map_max_entries(HOST_RING_MAP_NAME, host_ring_bytes.unwrap_or(UNUSED_RING_BYTES))
            .load(XDP_OBJECT)?;
        let mut xdp_name = match (host_ring_bytes, placement) {
            (Some(_), _) => HOST_XDP_PROGRAM_NAME,
            (None, MetaPlacement::Head) => XDP_HEAD_PROGRAM_NAME,
            (None, _) => XDP_PROGRAM_NAME,
        };
        let mut area_refused = None;
        let prog: &mut Xdp =
            ebpf.program_mut(xdp_name).ok_or(LoadError::Missing("XDP program"))?.try_into()?;
        if let Err(refused) = prog.load() {
            if xdp_name != XDP_PROGRAM_NAME || placement == MetaPlacement::Area {
                return Err(refused.into());
            }
            // Some kernels (and drivers) refuse bpf_xdp_adjust_meta, and the verifier then
            // refuses the whole program: the same program with the metadata in front of the
            // frame needs only bpf_xdp_adjust_head, which every XDP driver has.
            let head: &mut Xdp = ebpf
                .program_mut(XDP_HEAD_PROGRAM_NAME)
                .ok_or(LoadError::Missing("XDP program (metadata in front)"))?
                .try_into()?;
            if head.load().is_err() {
                // The first refusal says why.
                return Err(refused.into());
            }
            xdp_name = XDP_HEAD_PROGRAM_NAME;
            area_refused = Some(first_line(&refused));
        }
        if host_ring_bytes.is_some() {
            let tc: &mut SchedClassifier = ebpf
                .program_mut(HOST_TC_PROGRAM_NAME)
                .ok_or(LoadError::Missing("TC egress program"))?
                .try_into()?;
            tc.load()?;
        }
        if let Some(t) = tables {
            let map =
                ebpf.map_mut(FILTER_PREFIXES_MAP_NAME).ok_or(LoadError::Missing("prefix table"))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 16], FilterValue> = LpmTrie::try_from(map)?;
            for (addr, len, v) in &t.prefixes {
                trie.insert(&Key::new(u32::from(*len), *addr), v, 0)?;
            }
            let map =
                ebpf.map_mut(FILTER_PORTS_MAP_NAME).ok_or(LoadError::Missing("port table"))?;
            let mut ports: Array<&mut MapData, FilterValue> = Array::try_from(map)?;
            for (port, v) in &t.ports {
                ports.set(u32::from(*port), v, 0)?;
            }
            let map =
                ebpf.map_mut(FILTER_VLANS_MAP_NAME).ok_or(LoadError::Missing("VLAN table"))?;
            let mut vlans: Array<&mut MapData, u32> = Array::try_from(map)?;
            for (id, bits) in &t.vlans {
                vlans.set(u32::from(*id), u32::from(*bits), 0)?;
            }
        }
        let meta_in_head = xdp_name == XDP_HEAD_PROGRAM_NAME;
        Ok(Self {
            ebpf,
            config,
            link: None,
            xdp_name,
            egress_link: None,
            meta_in_head,
            area_refused,
        })
    }

    /// Whether each redirected frame starts with its [`XdpMeta`](dataplane_common::XdpMeta)
    /// (see [`XDP_HEAD_PROGRAM_NAME`]): the AF_XDP sockets must be told
    /// ([`XskOptions::meta_in_head`](crate::xsk::XskOptions::meta_in_head)).
    pub fn meta_in_head(&self) -> bool {
        self.meta_in_head
    }

    /// The verifier's line that refused the program using the metadata area, when
    /// [`MetaPlacement::Auto`] fell back to the one putting it in front.
    pub fn area_refused(&self) -> Option<&str> {
        self.area_refused.as_deref()
    }

    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(self.xdp_name)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// Attaches to `ifindex` in `mode`. The link detaches when `self` is dropped.
    pub fn attach(
        &mut self,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<(), aya::programs::ProgramError> {
        let link = self.program().attach_to_if_index(ifindex, mode)?;
        self.link = Some(link);
        Ok(())
    }

    /// Detaches from the interface while the maps stay readable: after it, no frame is
    /// counted or redirected, so the counters can be compared with what the sockets received.
    pub fn detach(&mut self) -> Result<(), aya::programs::ProgramError> {
        if let Some(link) = self.egress_link.take() {
            self.egress().detach(link)?;
        }
        match self.link.take() {
            Some(link) => self.program().detach(link),
            None => Ok(()),
        }
    }

    /// Host mode's TC egress program.
    pub fn egress(&mut self) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(HOST_TC_PROGRAM_NAME)
            .expect("in the object")
            .try_into()
            .expect("a classifier")
    }

    /// Host mode: attaches the TC egress program to `iface` as a TCX link (kernel ≥ 6.6), after
    /// the programs already there, so it sees what they let through and never changes their
    /// verdicts. It detaches with [`Self::detach`] or when `self` is dropped.
    pub fn attach_egress(&mut self, iface: &str) -> Result<(), aya::programs::ProgramError> {
        let link = self.egress().attach_with_options(
            iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )?;
        self.egress_link = Some(link);
        Ok(())
    }

    /// Host mode's ring buffer, for the one reader that drains it (taken once: a second call
    /// finds it missing).
    pub fn take_host_ring(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self.ebpf.take_map(HOST_RING_MAP_NAME).ok_or(LoadError::Missing("host ring"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// A second handle on the outcome counters, for a reader thread of its own (host mode's
    /// reader counts ring losses from it without waiting for the control thread).
    pub fn counter_reader(&self) -> Result<CounterReader, LoadError> {
        let Some(Map::PerCpuArray(map)) = self.ebpf.map(COUNTERS_MAP_NAME) else {
            return Err(LoadError::Missing("counter map"));
        };
        let again = MapData::from_id(map.info()?.id())?;
        Ok(CounterReader(PerCpuArray::try_from(Map::PerCpuArray(again))?))
    }

    /// Puts `socket_fd` in the XSKMAP slot of `queue`.
    pub fn bind_socket(&mut self, queue: u32, socket_fd: &impl AsRawFd) -> Result<(), LoadError> {
        let map = self.ebpf.map_mut(XSK_MAP_NAME).ok_or(LoadError::Missing("XSKMAP"))?;
        let mut xsks: XskMap<&mut MapData> = XskMap::try_from(map)?;
        xsks.set(queue, socket_fd.as_raw_fd(), 0)?;
        Ok(())
    }

    /// Sums the per-CPU outcome counters.
    pub fn counters(&self) -> Result<OutcomeCounters, LoadError> {
        let map = self.ebpf.map(COUNTERS_MAP_NAME).ok_or(LoadError::Missing("counter map"))?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = OutcomeCounters::default();
        for i in 0..OUTCOME_COUNT {
            out.0[i as usize] = arr.get(&i, 0)?.iter().sum();
        }
        Ok(out)
    }
}

/// What refused a program, in one line: the verifier's line that did (its log runs to
/// hundreds of lines), else the error's first line.
fn first_line(e: &aya::programs::ProgramError) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| l.contains("cannot") || l.contains("invalid"))
        .or_else(|| text.lines().next())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The outcome counters of one loaded program, readable from any thread.
pub struct CounterReader(PerCpuArray<MapData, u64>);

impl CounterReader {
    /// `outcome`'s count summed over CPUs.
    pub fn get(&self, outcome: Outcome) -> Result<u64, LoadError> {
        Ok(self.0.get(&(outcome as u32), 0)?.iter().sum())
    }
}

/// Packets per [`Outcome`], summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounters(pub [u64; OUTCOME_COUNT as usize]);

impl OutcomeCounters {
    pub fn get(&self, o: Outcome) -> u64 {
        self.0[o as usize]
    }
    /// Non-zero counters by name.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        Outcome::ALL
            .iter()
            .filter(|o| self.get(**o) > 0)
            .map(|o| (o.name(), self.get(*o)))
            .collect()
    }
}
