//! The connection state machine as a passive observer sees it (both directions, RFC 9293
//! §3.3.2 collapsed to what a tap can tell). Every transition goes through [`transition`].

/// The connection's state.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnState {
    /// No packet yet.
    #[default]
    Unknown = 0,
    /// The client's SYN was seen.
    SynSent = 1,
    /// The server's SYN-ACK was seen.
    SynReceived = 2,
    /// Handshake completed, or the flow was picked up with data flowing.
    Established = 3,
    /// One side sent FIN.
    HalfClosed = 4,
    /// Both sides sent FIN.
    Closing = 5,
    /// Both FINs acknowledged.
    Closed = 6,
    /// A RST was seen.
    Reset = 7,
}

impl ConnState {
    pub fn is_closed(self) -> bool {
        matches!(self, ConnState::Closed | ConnState::Reset)
    }
    pub fn is_half_open(self) -> bool {
        matches!(self, ConnState::SynSent | ConnState::SynReceived)
    }
    /// Open in the sense of RFC 9293: neither both FINs nor a RST.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ConnState::SynSent
                | ConnState::SynReceived
                | ConnState::Established
                | ConnState::HalfClosed
        )
    }
}

/// What a segment means for the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Syn,
    SynAck,
    Rst,
    /// FIN from a side that had not sent one; `other_fin` says whether the peer had.
    Fin {
        other_fin: bool,
    },
    /// Anything else (ACK, data); `acks_all_fins` when it acknowledges every FIN sent.
    Other {
        acks_all_fins: bool,
    },
}

/// One arm per transition, each with its rule.
pub fn transition(state: ConnState, seg: Segment) -> ConnState {
    use ConnState::{
        Closed, Closing, Established, HalfClosed, Reset, SynReceived, SynSent, Unknown,
    };
    use Segment::{Fin, Other, Rst, Syn, SynAck};
    match (state, seg) {
        // §3.5.2: a RST in any state aborts the connection.
        (_, Rst) => Reset,
        // §3.5: an active open starts with SYN.
        (Unknown, Syn) => SynSent,
        // A tap may join late: a SYN-ACK without its SYN is still a handshake in progress.
        (Unknown, SynAck) => SynReceived,
        // Joined mid-stream: data is flowing, treat as established (never an anomaly itself).
        (Unknown, Fin { .. }) => HalfClosed,
        (Unknown, Other { .. }) => Established,
        // §3.5: the passive side answers SYN with SYN-ACK.
        (SynSent, SynAck) => SynReceived,
        // §3.5: the third segment (ACK) completes the handshake.
        (SynReceived, Other { .. }) => Established,
        // §3.6: the first FIN half-closes; the second closes both directions.
        (SynReceived | Established, Fin { other_fin: false }) => HalfClosed,
        (HalfClosed | Established, Fin { other_fin: true }) => Closing,
        // §3.6: the last ACK of the close.
        (Closing, Other { acks_all_fins: true }) => Closed,
        // §3.6.1: a new SYN after a finished connection starts a new incarnation.
        (Closed | Reset | Closing, Syn) => SynSent,
        // Retransmitted SYN/SYN-ACK, data, ACKs: no change.
        (s, _) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::transition as t;
    use super::ConnState::*;
    use super::Segment::*;

    #[test]
    fn handshake_close_and_reset() {
        let mut s = t(Unknown, Syn);
        s = t(s, SynAck);
        s = t(s, Other { acks_all_fins: false });
        assert_eq!(s, Established);
        s = t(s, Fin { other_fin: false });
        assert_eq!(s, HalfClosed);
        s = t(s, Fin { other_fin: true });
        s = t(s, Other { acks_all_fins: true });
        assert_eq!(s, Closed);
        assert_eq!(t(s, Syn), SynSent);
        assert_eq!(t(Established, Rst), Reset);
        assert_eq!(t(Unknown, Other { acks_all_fins: false }), Established);
    }
}
