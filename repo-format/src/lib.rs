//! Coffer's repository: the stored format (one module per stored artifact) and the operations
//! on it (`ops/`). The format is specified in `docs/repository-format.md`; this crate is its
//! reference implementation.
//!
//! Write order is the central invariant: packs first, then the index that names them, then the
//! snapshot that refers to them, so whatever a reader finds is complete.

pub mod error;
pub mod format;
pub mod fs;
pub mod ops;
pub mod repository;
pub mod retention;
pub mod sources;
pub mod storage;
mod sync;

pub use coffer_chunker::ChunkerParams;
pub use coffer_crypto::KdfParams;
pub use error::{Error, Result};
pub use format::id::{BlobId, IndexId, KeyId, PackId, SnapshotId};
pub use format::snapshot::Snapshot;
pub use repository::{InitOptions, Repository};
pub use storage::{OpenMode, Storage, StorageOptions, StoreKind};
