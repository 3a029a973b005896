//! Opening a [`Storage`]: what a location names (a local directory, `s3://`, `gs://`), the
//! options it is opened with, and the handle built over the matching backend. May use the
//! backends and the scrubbing of secrets.

use super::local::LocalBackend;
use super::memory::MemoryBackend;
use super::object::{self, ObjectBackend};
use super::scrub::{scrub_url_credentials, Secrets};
use super::{Backend, Storage};
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Concurrent requests on an object store unless `--connections` says otherwise.
pub const DEFAULT_REMOTE_CONNECTIONS: usize = 8;
/// Concurrent writes on a local directory.
pub const DEFAULT_LOCAL_CONNECTIONS: usize = 2;

/// How to reach a location, from the command line.
#[derive(Clone, Default)]
pub struct StorageOptions {
    /// `KEY=VALUE` pairs: object_store configuration keys, plus `max_retries` and
    /// `retry_timeout` (e.g. `30s`, `500ms`, `2m`).
    pub options: Vec<(String, String)>,
    /// Requests to run at once; `None` for the default of the kind of store.
    pub connections: Option<usize>,
    /// Root directory of the metadata cache; `None` disables it. Only object stores use it: a
    /// local repository is as fast as a cache.
    pub cache_root: Option<PathBuf>,
    /// Upper bound on upload bandwidth in KiB/s (`--limit-upload`); `None`: unlimited.
    pub limit_upload: Option<u64>,
    /// Upper bound on download bandwidth in KiB/s (`--limit-download`); `None`: unlimited.
    pub limit_download: Option<u64>,
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option values may be credentials: only their keys are shown.
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StorageOptions")
            .field("option_keys", &keys)
            .field("connections", &self.connections)
            .field("cache_root", &self.cache_root)
            .field("limit_upload", &self.limit_upload)
            .field("limit_download", &self.limit_download)
            .finish()
    }
}

/// What kind of store a location names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Memory,
    S3,
    Gcs,
}

/// How to open a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The repository must already exist (its directory for local paths).
    Existing,
    /// Create the local directory if it is missing (for `init`).
    Create,
}

impl Storage {
    /// Opens a location with default options. See [`Storage::open_with`].
    pub fn open(location: &str, mode: OpenMode) -> Result<Storage> {
        Storage::open_with(location, mode, &StorageOptions::default())
    }

    /// Opens a location: a local path or `file:///path`, `s3://bucket/prefix` or
    /// `gs://bucket/prefix`. Building an object-store client makes no request; the first
    /// request reports missing buckets or bad credentials.
    pub fn open_with(location: &str, mode: OpenMode, options: &StorageOptions) -> Result<Storage> {
        // How the location appears in messages: a URL's user information is never shown.
        let shown = scrub_url_credentials(location);
        let config_err = |reason: String| Error::StorageConfig {
            location: shown.clone(),
            reason,
        };
        if location.is_empty() {
            return Err(config_err("the repository location is empty".into()));
        }
        let (kind, rest) = match location.split_once("://") {
            None => (StoreKind::Local, location),
            Some(("file", path)) => (StoreKind::Local, path),
            Some(("s3", rest)) => (StoreKind::S3, rest),
            Some(("gs", rest)) => (StoreKind::Gcs, rest),
            Some(("memory", _)) => return Err(config_err(
                "memory:// repositories live only inside one process; use a path, s3:// or gs://"
                    .into(),
            )),
            Some((other, _)) => {
                return Err(config_err(format!(
                    "unknown URL scheme {other:?}: use a path, file://, s3:// or gs://"
                )))
            }
        };
        let store_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_"))
            .collect();
        let secrets = Arc::new(Secrets::from_config(&options.options, &store_env));
        let (backend, default_connections): (Arc<dyn Backend>, usize) = if kind == StoreKind::Local
        {
            let store_options = object::store_options(&options.options, &config_err)?;
            if let Some((key, _)) = store_options.first() {
                return Err(config_err(format!(
                    "option {key:?} applies to s3:// and gs:// locations only"
                )));
            }
            let backend = LocalBackend::open(std::path::Path::new(rest), mode, &shown)?;
            (Arc::new(backend), DEFAULT_LOCAL_CONNECTIONS)
        } else {
            let backend =
                ObjectBackend::open(kind, rest, &options.options, secrets.clone(), &shown)?;
            (Arc::new(backend), DEFAULT_REMOTE_CONNECTIONS)
        };
        let backend: Arc<dyn Backend> =
            if options.limit_upload.is_some() || options.limit_download.is_some() {
                Arc::new(super::throttle::Throttled::new(
                    backend,
                    options.limit_upload,
                    options.limit_download,
                ))
            } else {
                backend
            };
        let mut storage = Storage::from_backend(backend, kind, &shown);
        storage.secrets = secrets;
        storage.connections = options.connections.unwrap_or(default_connections).max(1);
        if kind != StoreKind::Local {
            storage.cache_root = options.cache_root.clone();
        }
        Ok(storage)
    }

    /// A fresh in-memory store, for tests inside one process.
    pub fn in_memory() -> Result<Storage> {
        Ok(Storage::from_backend(
            Arc::new(MemoryBackend::new()),
            StoreKind::Memory,
            "memory://",
        ))
    }

    /// A handle over any backend (a wrapping one, such as a fault-injecting store in tests),
    /// named `location` in messages, with one connection, no cache and no secrets.
    pub fn from_backend(backend: Arc<dyn Backend>, kind: StoreKind, location: &str) -> Storage {
        Storage {
            backend,
            kind,
            location: location.to_string(),
            connections: 1,
            secrets: Arc::default(),
            listings: Arc::default(),
            early: Arc::default(),
            cache_root: None,
            cache: None,
            plan: Arc::default(),
        }
    }

    /// Uses a metadata cache under `cache_root` (for tests of the cache on any store).
    pub fn with_cache_root(mut self, cache_root: PathBuf) -> Storage {
        self.cache_root = Some(cache_root);
        self
    }
}
