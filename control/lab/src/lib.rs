//! `wirewatch lab`: the incidents of ../shared/INCIDENTS.md rebuilt in network namespaces with
//! real kernel TCP, real nftables/conntrack, and wirewatch watching live through XDP/AF_XDP on
//! span ports. Every namespace is torn down on exit, failure or Ctrl-C (unless --keep).
//!
//! A crate of its own so the product carries none of it: `control` builds the `lab` subcommand
//! from it under its default `lab` feature.
mod harness;
mod incidents;
mod packet_socket;

pub use harness::{lab, Incident, LabArgs};
