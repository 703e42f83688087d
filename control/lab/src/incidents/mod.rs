//! The incidents of ../shared/INCIDENTS.md, one file each: the topology, the traffic, the
//! fault (switched off in the control run) and the kinds the monitor must report.
pub(crate) mod conntrack_invalid;
pub(crate) mod ecmp_split;
pub(crate) mod keepalive_race;
pub(crate) mod syn_blackhole;
pub(crate) mod tuple_collision;
