//! The ladder of an evidence file: its frames read back (the capture reader for the bytes, the
//! file's own blocks for each frame's vantage and comment), each drawn as an arrow between the
//! flow's endpoints, with SEQ/ACK relative as Wireshark shows them.
use std::net::IpAddr;
use std::path::Path;

use dataplane_common::tcp_flags;

use super::ReportError;
use crate::capture::CaptureReader;
use crate::packet::TcpPacket;
use crate::seq::SeqNumber;

/// Evidence files are small (headers only, a bounded slice); anything larger is not one.
const MAX_EVIDENCE_BYTES: u64 = 64 << 20;

/// One frame of an evidence file.
#[derive(Clone, Debug)]
pub struct EvidenceFrame {
    /// 1-based, as Wireshark numbers it.
    pub number: u32,
    pub ts_ns: u64,
    /// The interface (vantage) name the file gives it.
    pub vantage: String,
    /// `None` for a frame that does not decode as TCP (drawn as a row of its own).
    pub packet: Option<TcpPacket>,
    pub comment: Option<String>,
}

/// Reads an evidence pcapng: the frames through the project's capture reader, and for each the
/// interface name and comment from its block (what the reader does not keep).
pub fn read_evidence(path: &Path) -> Result<Vec<EvidenceFrame>, ReportError> {
    let name = path.display().to_string();
    let io = |source| ReportError::Io { path: name.clone(), source };
    let not = |why: String| ReportError::NotEvidence { path: name.clone(), why };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_EVIDENCE_BYTES {
        return Err(not(format!(
            "{size} bytes (an evidence file is at most {MAX_EVIDENCE_BYTES})"
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let blocks = Blocks::parse(&bytes).map_err(not)?;
    let mut reader = CaptureReader::open(path).map_err(|e| not(e.to_string()))?;
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame().map_err(|e| not(e.to_string()))? {
        let (iface, comment) = blocks
            .packets
            .iter()
            .find(|b| b.offset == f.offset)
            .map(|b| (b.iface, b.comment.clone()))
            .ok_or_else(|| not(format!("no packet block at offset {}", f.offset)))?;
        let vantage = blocks.interfaces.get(iface as usize).cloned().unwrap_or_default();
        frames.push(EvidenceFrame {
            number: frames.len() as u32 + 1,
            ts_ns: f.ts_ns,
            vantage,
            packet: crate::packet::decode(&f.data, f.orig_len, f.ts_ns, iface as u16).ok(),
            comment,
        });
    }
    Ok(frames)
}

/// The blocks of a pcapng file as [`crate::pcapng::PcapngWriter`] writes them (little-endian,
/// one section): interface names and, per enhanced packet block, its interface and comment.
struct Blocks {
    interfaces: Vec<String>,
    packets: Vec<PacketBlock>,
}

struct PacketBlock {
    offset: u64,
    iface: u32,
    comment: Option<String>,
}

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The value of option `code` in an option list (pcapng §3.5: code, length, padded value).
fn option(mut opts: &[u8], code: u16) -> Option<String> {
    while opts.len() >= 4 {
        let c = u16::from_le_bytes([opts[0], opts[1]]);
        let len = u16::from_le_bytes([opts[2], opts[3]]) as usize;
        if c == 0 {
            break;
        }
        let value = opts.get(4..4 + len)?;
        if c == code {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        opts = opts.get(4 + len.next_multiple_of(4)..)?;
    }
    None
}

impl Blocks {
    fn parse(b: &[u8]) -> Result<Self, String> {
        let mut out = Blocks { interfaces: Vec::new(), packets: Vec::new() };
        let mut at = 0usize;
        while at < b.len() {
            let (Some(kind), Some(len)) = (le32(b, at), le32(b, at + 4)) else {
                return Err(format!("a block header cut at offset {at}"));
            };
            let len = len as usize;
            if len < 12 || !len.is_multiple_of(4) || at + len > b.len() {
                return Err(format!("block length {len} at offset {at}"));
            }
            let body = &b[at + 8..at + len - 4];
            match kind {
                SHB if le32(body, 0) != Some(0x1A2B_3C4D) => {
                    return Err("not a little-endian pcapng section".into());
                }
                SHB if at != 0 => return Err("a second section".into()),
                IDB => out
                    .interfaces
                    .push(option(body.get(8..).unwrap_or(&[]), IF_NAME).unwrap_or_default()),
                EPB => {
                    let caplen = le32(body, 12).ok_or("a packet block cut short")? as usize;
                    let opts = body.get(20 + caplen.next_multiple_of(4)..).unwrap_or(&[]);
                    out.packets.push(PacketBlock {
                        offset: at as u64,
                        iface: le32(body, 0).ok_or("a packet block cut short")?,
                        comment: option(opts, OPT_COMMENT),
                    });
                }
                _ => {}
            }
            at += len;
        }
        Ok(out)
    }
}

/// A column of the ladder: an endpoint, or a vantage between them when there are several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    Endpoint(String),
    Vantage(String),
}

/// How a sender looks in one packet: what a RST is compared on (docs/detections.md,
/// rst_foreign_sender).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Looks {
    pub mac: String,
    pub ttl: u8,
    pub ip_id: u16,
    pub timestamp: Option<u32>,
}

impl Looks {
    fn of(p: &TcpPacket) -> Self {
        Looks {
            mac: crate::anomaly::mac_str(&p.src_mac),
            ttl: p.ttl,
            ip_id: p.ip_id,
            timestamp: p.opts.timestamp.map(|t| t.0),
        }
    }
}

/// One frame of the evidence as the ladder draws it.
#[derive(Clone, Debug)]
pub struct Arrow {
    pub frame: u32,
    pub ts_ns: u64,
    /// Column indexes: from the sender (or where the same packet was seen before) to where it
    /// was seen, or on to the receiver.
    pub from: usize,
    pub to: usize,
    /// Drawn up to the vantage where it was last seen, not on to the receiver.
    pub lost: bool,
    /// What the row says: flags, relative SEQ/ACK, length, window; or why it is not drawn.
    pub tcp: Option<Segment>,
    /// The vantages that saw this packet (one, or several for a packet matched across them).
    pub vantages: Vec<String>,
    /// The frame of the same packet's previous sighting (its arrows are linked).
    pub after: Option<u32>,
    /// For a RST: the sender as this packet shows it, and as the flow's earlier packets from
    /// the same address showed it (if the slice holds one).
    pub rst_looks: Option<(Looks, Option<Looks>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub flags: u8,
    pub rel_seq: i64,
    pub rel_ack: Option<i64>,
    pub len: u32,
    pub window: u16,
    pub from_client: bool,
    pub src: (IpAddr, u16),
}

pub struct Ladder {
    pub columns: Vec<Column>,
    pub arrows: Vec<Arrow>,
}

/// "SYN, ACK" as Wireshark's Info column lists them.
pub fn flag_names(f: u8) -> String {
    let names = [
        (tcp_flags::FIN, "FIN"),
        (tcp_flags::SYN, "SYN"),
        (tcp_flags::RST, "RST"),
        (tcp_flags::PSH, "PSH"),
        (tcp_flags::ACK, "ACK"),
        (tcp_flags::URG, "URG"),
        (tcp_flags::ECE, "ECE"),
        (tcp_flags::CWR, "CWR"),
    ];
    let v: Vec<&str> = names.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(", ")
    }
}

/// Lays the frames out between `client` (left) and `server` (right). `missing_at` names
/// vantages that did not see `lost_frame` (lost_between_sensors): they get columns, and that
/// frame stops at the last vantage that saw it.
pub fn layout(
    frames: &[EvidenceFrame],
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    missing_at: &[String],
    lost_frame: Option<u32>,
) -> Ladder {
    let mut vantages: Vec<String> = Vec::new();
    for v in frames.iter().map(|f| &f.vantage).chain(missing_at) {
        if !vantages.contains(v) {
            vantages.push(v.clone());
        }
    }
    let ep = |(a, p): (IpAddr, u16)| Column::Endpoint(crate::anomaly::endpoint_str(a, p));
    let mut columns = vec![ep(client)];
    // One vantage: its name is on every arrow; several: each a column, client side first in
    // the order they appear.
    let many = vantages.len() > 1;
    if many {
        columns.extend(vantages.iter().cloned().map(Column::Vantage));
    }
    columns.push(ep(server));
    let right = columns.len() - 1;
    let col_of = |v: &str| vantages.iter().position(|x| x == v).map(|i| i + 1).unwrap_or(0);

    let mut rel = Relative::default();
    // The sightings of each packet so far: (identity, frame, column).
    // Each packet's pass by the sensors: a frame joins the last pass of the same packet
    // unless that pass already holds its vantage (then the packet was sent again: a
    // retransmission with the same IP-ID is a packet of its own).
    let mut passes: Vec<(PacketId, Vec<(u32, &str)>)> = Vec::new();
    let mut pass_of = vec![usize::MAX; frames.len()];
    for (i, f) in frames.iter().enumerate() {
        let Some(p) = &f.packet else { continue };
        let id = PacketId::of(p);
        match passes.iter().rposition(|(pid, _)| *pid == id) {
            Some(k) if !passes[k].1.iter().any(|(_, v)| *v == f.vantage) => {
                passes[k].1.push((f.number, &f.vantage));
                pass_of[i] = k;
            }
            _ => {
                passes.push((id, vec![(f.number, &f.vantage)]));
                pass_of[i] = passes.len() - 1;
            }
        }
    }
    let mut arrows = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let Some(p) = &f.packet else {
            arrows.push(Arrow {
                frame: f.number,
                ts_ns: f.ts_ns,
                from: 0,
                to: right,
                lost: false,
                tcp: None,
                vantages: vec![f.vantage.clone()],
                after: None,
                rst_looks: None,
            });
            continue;
        };
        let from_client = (p.src(), p.sport) == client || (p.src(), p.sport) != server;
        let (sender, receiver) = if from_client { (0, right) } else { (right, 0) };
        let (rel_seq, rel_ack) = rel.of(p, from_client);
        let pass = &passes[pass_of[i]].1;
        let at = pass.iter().position(|(n, _)| *n == f.number).unwrap_or(0);
        let before = at.checked_sub(1).map(|b| (pass[b].0, col_of(pass[b].1)));
        let here = if many { col_of(&f.vantage) } else { receiver };
        // The pass's last sighting carries the packet on to the receiver when every vantage
        // saw it; otherwise it is drawn only as far as the sensors saw it.
        let last_sighting = at + 1 == pass.len();
        let lost = lost_frame == Some(f.number);
        let seen_everywhere = pass.len() == vantages.len();
        let to = if many && last_sighting && seen_everywhere && !lost { receiver } else { here };
        let sightings: Vec<String> = pass.iter().map(|(_, v)| v.to_string()).collect();
        let rst_looks = p.has(tcp_flags::RST).then(|| {
            let flow = frames
                .iter()
                .take_while(|g| g.number < f.number)
                .filter_map(|g| g.packet.as_ref())
                .find(|q| (q.src(), q.sport) == (p.src(), p.sport) && !q.has(tcp_flags::RST))
                .map(Looks::of);
            (Looks::of(p), flow)
        });
        arrows.push(Arrow {
            frame: f.number,
            ts_ns: f.ts_ns,
            from: before.map_or(sender, |(_, c)| c),
            to,
            lost,
            tcp: Some(Segment {
                flags: p.flags,
                rel_seq,
                rel_ack,
                len: p.payload_len,
                window: p.window,
                from_client,
                src: (p.src(), p.sport),
            }),
            vantages: sightings,
            after: before.map(|(n, _)| n),
            rst_looks,
        });
    }
    Ladder { columns, arrows }
}

/// A packet's identity across vantages: what lost_between_sensors matches on (IP-ID, SEQ,
/// ACK, flags, length), with its sender.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PacketId {
    src: (IpAddr, u16),
    ip_id: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    len: u32,
}

impl PacketId {
    fn of(p: &TcpPacket) -> Self {
        PacketId {
            src: (p.src(), p.sport),
            ip_id: p.ip_id,
            seq: p.seq.0,
            ack: p.ack.0,
            flags: p.flags,
            len: p.payload_len,
        }
    }
}

/// Relative sequence numbers as Wireshark's `tcp_analyze_sequence_number`
/// (epan/dissectors/packet-tcp.c) sets its `base_seq` per direction: the SYN's SEQ when the
/// direction's first packet is a SYN (so the SYN is 0 and the first byte 1), else that packet's
/// SEQ − 1 (the first byte seen is 1, "bug 1542"); a direction not yet seen takes its base from
/// the first ACK the other side sends (ACK − 1).
#[derive(Default)]
pub(super) struct Relative {
    /// [client's, server's]
    base: [Option<SeqNumber>; 2],
}

impl Relative {
    pub(super) fn of(&mut self, p: &TcpPacket, from_client: bool) -> (i64, Option<i64>) {
        let (fwd, rev) = if from_client { (0, 1) } else { (1, 0) };
        let base =
            *self.base[fwd].get_or_insert(if p.has(tcp_flags::SYN) { p.seq } else { p.seq - 1 });
        let has_ack = p.has(tcp_flags::ACK);
        if has_ack && self.base[rev].is_none() {
            self.base[rev] = Some(p.ack - 1);
        }
        let rel_ack = self.base[rev].filter(|_| has_ack).map(|b| i64::from(p.ack.diff(b)));
        (i64::from(p.seq.diff(base)), rel_ack)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use wirewatch_testkit::craft::TcpSegment;

    use super::*;
    use crate::evidence::{EvidenceJob, EvidencePacket};

    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const S: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn seg(from_client: bool, seq: u32, ack: u32, flags: u8, len: usize, ip_id: u16) -> Vec<u8> {
        let (a, ap, b, bp) = if from_client { (C, 40000, S, 80) } else { (S, 80, C, 40000) };
        let mut s = TcpSegment::new(a, ap, b, bp);
        (s.seq, s.ack, s.flags, s.payload_len, s.ip_id) = (seq, ack, flags, len, ip_id);
        if !from_client {
            s.src_mac = [0x02, 0, 0, 0, 0, 0x02];
            s.dst_mac = [0x02, 0, 0, 0, 0, 0x01];
        }
        s.frame()
    }

    fn write(
        dir: &Path,
        frames: &[(Vec<u8>, u16, Option<&str>)],
        vantages: &[&str],
    ) -> std::path::PathBuf {
        let path = dir.join("slice.pcapng");
        let job = EvidenceJob {
            path: path.clone(),
            packets: frames
                .iter()
                .enumerate()
                .map(|(i, (data, v, c))| EvidencePacket {
                    id: i as u32,
                    ts_ns: 1_700_000_000_000_000_000 + i as u64 * 1_000_000,
                    vantage: *v,
                    orig_len: data.len() as u32,
                    data: data.clone(),
                    comment: c.map(String::from),
                })
                .collect(),
            after_left: 0,
            after_until_ns: 0,
        };
        job.write(&vantages.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap();
        path
    }

    use dataplane_common::tcp_flags::{ACK, PSH, RST, SYN};

    #[test]
    fn handshake_data_and_rst_are_relative_to_the_isns() {
        let dir = wirewatch_testkit::tempdir::TempDir::new("ladder-rel");
        let isn_c = u32::MAX - 10; // wraps within the slice
        let isn_s = 7_000;
        let path = write(
            &dir,
            &[
                (seg(true, isn_c, 0, SYN, 0, 1), 0, None),
                (seg(false, isn_s, isn_c + 1, SYN | ACK, 0, 0), 0, None),
                (seg(true, isn_c + 1, isn_s + 1, ACK, 0, 2), 0, None),
                (seg(true, isn_c + 1, isn_s + 1, PSH | ACK, 1000, 3), 0, None),
                (
                    seg(false, isn_s + 1, isn_c.wrapping_add(1001), RST, 0, 0),
                    0,
                    Some("wirewatch x: y"),
                ),
            ],
            &["eth0"],
        );
        let frames = read_evidence(&path).unwrap();
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[4].comment.as_deref(), Some("wirewatch x: y"));
        assert!(frames.iter().all(|f| f.vantage == "eth0"));
        let l = layout(&frames, (C, 40000), (S, 80), &[], None);
        assert_eq!(
            l.columns,
            vec![Column::Endpoint("10.0.0.1:40000".into()), Column::Endpoint("10.0.0.2:80".into())]
        );
        let rows: Vec<(u32, usize, usize, i64, Option<i64>)> = l
            .arrows
            .iter()
            .map(|a| {
                let t = a.tcp.as_ref().unwrap();
                (a.frame, a.from, a.to, t.rel_seq, t.rel_ack)
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (1, 0, 1, 0, None),
                (2, 1, 0, 0, Some(1)),
                (3, 0, 1, 1, Some(1)),
                (4, 0, 1, 1, Some(1)),
                (5, 1, 0, 1, None),
            ]
        );
        // The RST's sender compared with the server's earlier SYN-ACK.
        let (rst, flow) = l.arrows[4].rst_looks.clone().unwrap();
        assert_eq!(rst.mac, "02:00:00:00:00:02");
        assert_eq!(flow.unwrap().ttl, rst.ttl);
    }

    #[test]
    fn a_packet_lost_between_vantages_stops_where_it_was_last_seen() {
        let dir = wirewatch_testkit::tempdir::TempDir::new("ladder-lost");
        // The data packet reaches "up" and "down", its retransmission only "up".
        let data = seg(true, 101, 501, PSH | ACK, 100, 7);
        let again = seg(true, 101, 501, PSH | ACK, 100, 8);
        let path = write(
            &dir,
            &[
                (data.clone(), 0, None),
                (data.clone(), 1, None),
                (again, 0, Some("wirewatch lost_between_sensors: z")),
                // Sent again at the same vantage with the same IP-ID: a packet of its own.
                (data, 0, None),
            ],
            &["up", "down"],
        );
        let frames = read_evidence(&path).unwrap();
        let l = layout(&frames, (C, 40000), (S, 80), &["down".to_string()], Some(3));
        assert_eq!(l.columns.len(), 4, "client, up, down, server");
        let a: Vec<(u32, usize, usize, bool, Option<u32>)> =
            l.arrows.iter().map(|a| (a.frame, a.from, a.to, a.lost, a.after)).collect();
        assert_eq!(
            a,
            vec![
                (1, 0, 1, false, None),    // client → up
                (2, 1, 3, false, Some(1)), // up → down, on to the server
                (3, 0, 1, true, None),     // client → up, lost there
                (4, 0, 1, false, None),    // client → up, not seen at down: drawn to up only
            ]
        );
        assert_eq!(l.arrows[1].vantages, vec!["up", "down"]);
    }

    #[test]
    fn a_file_that_is_not_evidence_is_refused_with_its_reason() {
        let dir = wirewatch_testkit::tempdir::TempDir::new("ladder-bad");
        let p = dir.join("x.pcapng");
        std::fs::write(&p, [0x0a, 0x0d, 0x0d, 0x0a, 0xff, 0xff, 0, 0]).unwrap();
        let e = read_evidence(&p).unwrap_err().to_string();
        assert!(e.contains("block length"), "{e}");
    }
}
