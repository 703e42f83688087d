//! wirewatch's data plane: the XDP loader, AF_XDP sockets and pinned workers, packet sources
//! (live and capture files), the per-flow TCP tracker and the detectors.
pub mod loader;
pub mod craft;
pub mod netns;
pub mod xsk;
pub mod pcapng;
pub mod worker;
pub mod capture;
pub mod packet;
pub mod pipeline;
pub mod seq;
pub mod anomaly;
pub mod engine;
pub mod evidence;
pub mod flow;
pub mod tcp;
pub mod traffic;
