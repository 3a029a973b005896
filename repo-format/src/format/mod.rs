//! Every stored artifact as bytes in, typed values out: ids, the sealed envelope, packs, index
//! files, trees, snapshots, the configuration, key files, deletion plans and lease records.
//! The byte layouts are specified in `docs/repository-format.md`.

pub mod compress;
pub mod config;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod lease;
pub mod pack;
pub mod plan;
pub mod sealed;
pub mod snapshot;
pub mod tree;
