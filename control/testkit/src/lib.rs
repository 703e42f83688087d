//! wirewatch's test kit, kept out of the product: frames built byte by byte (`craft`, `encap`),
//! network namespaces that delete themselves (`netns`) and real kernel TCP between them
//! (`traffic`). The lab, the benchmarks and the tests use it; the `wirewatch` binary does not.
pub mod craft;
pub mod encap;
pub mod netns;
pub mod traffic;
