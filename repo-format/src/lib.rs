//! Coffer's repository: the stored format (one module per stored artifact) and the operations
//! on it (`ops/`). The format is specified in `docs/repository-format.md`; this crate is its
//! reference implementation.
//!
//! Write order is the central invariant: packs first, then the index that names them, then the
//! snapshot that refers to them, so whatever a reader finds is complete.

pub mod cache;
pub mod child;
pub mod config;
pub mod direct;
pub mod error;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod lease;
pub mod ops;
pub mod pack;
pub mod parallel;
pub mod plan;
pub mod repository;
pub mod retention;
pub mod safe_fs;
pub mod sealed;
pub mod snapshot;
pub mod sources;
pub mod storage;
pub mod tree;
pub mod writer;

pub use coffer_chunker::ChunkerParams;
pub use coffer_crypto::KdfParams;
pub use error::{Error, Result};
pub use id::{BlobId, IndexId, KeyId, PackId, SnapshotId};
pub use repository::{InitOptions, Repository};
pub use snapshot::Snapshot;
pub use storage::{OpenMode, Storage, StorageOptions, StoreKind};
