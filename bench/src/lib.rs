//! The benchmark kit shared by `wirewatch-bench` and the replay tests: the documented capture
//! model (`gen`).
pub mod gen;
