//! Every stored artifact as bytes in, typed values out: ids, the sealed envelope, packs, index
//! files, trees, snapshots, the configuration, key files, deletion plans, lease records and drill
//! results.
//! The byte layouts are specified in `docs/repository-format.md`; where each object is stored
//! is [`key::ObjectKey`]'s.
//!
//! Pure: no storage, no clock, no I/O. Reading and writing these artifacts is
//! `repository/stored.rs` (and `repository/lease.rs` for the lease at run time); callers verify
//! with `from_stored` and produce with `to_stored`.

pub mod compress;
pub mod config;
pub mod drill;
pub mod id;
pub mod index;
pub mod key;
pub mod keyfile;
pub mod lease;
pub mod pack;
pub mod plan;
pub mod sealed;
pub mod snapshot;
pub mod tree;
