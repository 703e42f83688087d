//! wirewatch's test kit, kept out of the product: frames built byte by byte (`craft`, `encap`),
//! network namespaces that delete themselves (`netns`), the topologies built from them
//! (`topology`), real kernel TCP between them (`traffic`) and the directories tests write into
//! (`tempdir`). The lab, the benchmarks and the tests use it; the `wirewatch` binary does not.
pub mod craft;
pub mod encap;
pub mod netns;
pub mod tempdir;
pub mod topology;
pub mod traffic;
