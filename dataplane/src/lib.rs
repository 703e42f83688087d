//! wirewatch's data plane: the XDP loader, AF_XDP sockets and pinned workers, packet sources
//! (live and capture files), the per-flow TCP tracker and the detectors.
pub mod anomaly;
pub mod budget;
pub mod capture;
pub mod config;
pub mod engine;
pub mod evidence;
pub mod filter;
pub mod flow;
pub mod host;
pub mod loader;
pub mod mem;
pub mod nicstats;
pub mod packet;
pub mod pcapng;
pub mod pipeline;
pub mod report;
pub mod schema;
pub mod seq;
pub mod tcp;
pub mod vantage;
pub mod worker;
pub mod xsk;
