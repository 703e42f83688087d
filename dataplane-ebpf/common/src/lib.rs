//! The kernel/user ABI of wirewatch and the header parser both sides share.
//!
//! Everything here is `no_std`. Types crossing the kernel/user boundary are `#[repr(C)]`,
//! `Copy`, free of implicit padding and carry a `const` size assertion; their `aya::Pod`
//! impls live behind the `user` feature.
#![no_std]

pub mod abi;
pub mod parse;

pub use abi::*;
pub use parse::*;
