//! The one seam between Coffer and the bytes at rest: a thin synchronous facade over
//! [`object_store`].
//!
//! A location is a local path (or `file:///path`), `s3://bucket/prefix` or `gs://bucket/prefix`.
//! Object stores are configured the way object_store configures them: from the environment
//! (`AWS_*`, `GOOGLE_*`) and from `KEY=VALUE` options using object_store's configuration keys,
//! plus two keys of Coffer's own for the retry policy (`max_retries`, `retry_timeout`). Every
//! repository object is addressed by a key such as `data/ab/ab12…` relative to the repository
//! root (the prefix). Content-addressed objects are written with `PutMode::Create`: an object
//! that already exists under its content hash already holds those bytes, so `AlreadyExists` is
//! success. Writes are atomic on every supported store (object stores by nature, the local file
//! system by writing a temporary file and renaming it; multipart uploads become visible only when
//! completed).
//!
//! Requests that fail transiently (5xx, 429, timeouts, refused or reset connections) are retried
//! with exponential backoff by object_store's retry layer, bounded by `max_retries` and
//! `retry_timeout`; permanent failures (403, 401, 404 of the bucket) come back at once. Errors
//! name the operation and the location (bucket and key) and pass through [`Storage::scrub`], so
//! no configured secret can appear in a message.
//!
//! Listings are remembered for the life of the handle and updated by this handle's own writes
//! and deletes, so a command lists each prefix at most once. Immutable metadata (snapshots,
//! index files, tree packs) can be served from a verified local [`Cache`].
//!
//! The facade blocks the calling thread on a private tokio runtime, so the repository code stays
//! synchronous and may call it from any number of plain threads (never from inside a runtime).

pub mod cache;

use crate::error::{Error, Result};
use crate::storage::cache::Cache;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig, WriteMultipart,
};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Concurrent requests on an object store unless `--connections` says otherwise.
pub const DEFAULT_REMOTE_CONNECTIONS: usize = 8;
/// Concurrent writes on a local directory.
pub const DEFAULT_LOCAL_CONNECTIONS: usize = 2;
/// Objects at least this large are uploaded to object stores in parts.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// The size of one part of a multipart upload (S3 needs at least 5 MiB per part but the last).
pub const MULTIPART_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one object uploaded at once.
const MULTIPART_CONCURRENCY: usize = 2;
/// Default retries of one request that failed transiently.
pub const DEFAULT_MAX_RETRIES: usize = 4;
/// Default bound on the time spent retrying one request.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Option keys (object_store's, with or without their `aws_`/`google_` prefix) whose values
/// are secret. Their values, from options or the environment, are scrubbed from messages.
const SECRET_KEY_MARKERS: &[&str] = &[
    "secret",
    "token",
    "password",
    "service_account_key",
    "customer_key",
    "access_key_id",
];

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
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option values may be credentials: only their keys are shown.
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StorageOptions")
            .field("option_keys", &keys)
            .field("connections", &self.connections)
            .field("cache_root", &self.cache_root)
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

/// The permissions of what Coffer creates in a local repository.
///
/// Key files are enough for an offline guessing attack on the password, so by default nothing
/// is readable by anyone but the owner: files 0600, directories 0700. An owner who wants a
/// group to read (or write) the repository sets the group bits on the repository's directory;
/// new directories then get the same group bits and new files the group's read and write bits
/// (a 0750 directory gives 0640 files and 0750 directories). Permissions for others are never
/// given, and the process's umask still applies (restic behaves alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalModes {
    /// Mode of new files.
    pub file: u32,
    /// Mode of new directories.
    pub dir: u32,
}

impl LocalModes {
    /// Owner only.
    pub const PRIVATE: LocalModes = LocalModes {
        file: 0o600,
        dir: 0o700,
    };

    /// The modes for a repository whose root directory has permission bits `root_mode`.
    pub fn for_root(root_mode: u32) -> LocalModes {
        let group = root_mode & 0o070;
        LocalModes {
            file: LocalModes::PRIVATE.file | (group & 0o060),
            dir: LocalModes::PRIVATE.dir | group,
        }
    }
}

/// Object keys and sizes under each listed directory.
type Listings = HashMap<String, Vec<(String, u64)>>;

/// How many pack files a local store keeps open between reads.
const OPEN_PACKS: usize = 32;

/// Local reads of at most this many bytes go into a buffer the thread keeps for its next read
/// (a whole pack, 16 MiB and a little more by default, fits); larger ones get a buffer of
/// their own.
const KEPT_READ_BUFFER: u64 = 32 << 20;

/// Pack files a local store keeps open for reading, the most recently used last, so that a
/// restore of thousands of small files opens each pack once instead of once per file (an
/// `openat` and a `close` each: 4% of a restore's CPU). Packs never change once written (their
/// name is their hash, and a write of an existing name writes nothing), so a kept descriptor
/// reads exactly what a fresh open would; [`Storage::delete`] drops the key, so a deleted pack
/// is not read through here and its space is freed when the last descriptor closes.
#[derive(Default)]
struct OpenPacks(Mutex<VecDeque<(String, Arc<std::fs::File>)>>);

impl OpenPacks {
    fn get(&self, key: &str) -> Option<Arc<std::fs::File>> {
        let mut open = crate::repository::writer::lock(&self.0);
        let at = open.iter().position(|(k, _)| k == key)?;
        let entry = open.remove(at)?;
        let file = entry.1.clone();
        open.push_back(entry);
        Some(file)
    }

    fn put(&self, key: &str, file: Arc<std::fs::File>) {
        let mut open = crate::repository::writer::lock(&self.0);
        if open.iter().any(|(k, _)| k == key) {
            return;
        }
        open.push_back((key.to_string(), file));
        while open.len() > OPEN_PACKS {
            open.pop_front();
        }
    }

    /// Drops the descriptor kept for `key`, closing it after the lock is released: closing a
    /// deleted file frees its pages and blocks (8-10 ms for a 16 MiB pack on the benchmark VM),
    /// which would otherwise hold up every other reader and deleter.
    fn forget(&self, key: &str) {
        let closing = {
            let mut open = crate::repository::writer::lock(&self.0);
            let at = open.iter().position(|(k, _)| k == key);
            at.and_then(|at| open.remove(at))
        };
        drop(closing);
    }
}

/// A handle on the storage that holds one repository.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    kind: StoreKind,
    /// Key prefix of the repository inside the store (empty for a local directory).
    root: String,
    /// How the user named the location, for messages (never carries credentials).
    location: String,
    runtime: Arc<tokio::runtime::Runtime>,
    /// How many requests to run at once (uploads during backup, downloads during copy).
    connections: usize,
    /// Configured secret values, removed from every message.
    secrets: Arc<Vec<String>>,
    /// Listings already made by this handle, by directory, kept current by its own writes.
    listings: Arc<Mutex<Listings>>,
    cache_root: Option<PathBuf>,
    cache: Option<Arc<Cache>>,
    /// For a local directory: its path, so reads go straight to the file system (one `pread`
    /// instead of a round trip through the I/O runtime's blocking pool).
    local_root: Option<PathBuf>,
    /// For a local directory: the modes of the files and directories it creates.
    local_modes: LocalModes,
    /// Local pack files kept open for reading.
    open_packs: Arc<OpenPacks>,
    /// The same, opened for direct reads ([`Self::with_range_direct`]).
    direct_packs: Arc<OpenPacks>,
    /// Cleared once the file system refuses a direct read: later reads go the ordinary way.
    direct_reads: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.location)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// How to open a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The repository must already exist (its directory for local paths).
    Existing,
    /// Create the local directory if it is missing (for `init`).
    Create,
}

fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coffer-io")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::io("starting the I/O runtime for", "storage", e))
}

/// Parses a duration such as `30s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_MARKERS.iter().any(|m| key.contains(m))
}

/// The retry policy and the remaining (object_store) options.
fn split_retry_options(
    options: &[(String, String)],
    config_err: &dyn Fn(String) -> Error,
) -> Result<(RetryConfig, Vec<(String, String)>)> {
    let mut retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: DEFAULT_MAX_RETRIES,
        retry_timeout: DEFAULT_RETRY_TIMEOUT,
    };
    let mut rest = Vec::new();
    for (key, value) in options {
        match key.as_str() {
            "max_retries" => {
                retry.max_retries = value.parse().map_err(|_| {
                    config_err(format!("option max_retries={value:?} is not a number"))
                })?
            }
            "retry_timeout" => {
                retry.retry_timeout = parse_duration(value).ok_or_else(|| {
                    config_err(format!(
                        "option retry_timeout={value:?} is not a duration such as 30s"
                    ))
                })?
            }
            _ => rest.push((key.clone(), value.clone())),
        }
    }
    Ok((retry, rest))
}

/// Splits `bucket/prefix` (what follows `s3://` or `gs://`).
fn split_bucket(rest: &str) -> (&str, String) {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    (bucket, prefix)
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
        let shown_location = scrub_url_credentials(location);
        let config_err = |reason: String| Error::StorageConfig {
            location: shown_location.clone(),
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
        let (retry, store_options) = split_retry_options(&options.options, &config_err)?;
        let mut secrets: Vec<String> = options
            .options
            .iter()
            .filter(|(k, _)| is_secret_key(k))
            .map(|(_, v)| v.clone())
            .collect();
        let store_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_"))
            .collect();
        secrets.extend(
            store_env
                .iter()
                .filter(|(k, _)| is_secret_key(k))
                .map(|(_, v)| v.clone()),
        );
        // A user name and password written into a URL (an `endpoint` option, `AWS_ENDPOINT`)
        // are credentials too, wherever they turn up, not only inside the URL.
        for (_, value) in options.options.iter().chain(&store_env) {
            secrets.extend(url_credentials(value));
        }
        // Short values would mangle every message; no real credential is that short.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut local_root = None;
        let mut local_modes = LocalModes::PRIVATE;
        let (store, root): (Arc<dyn ObjectStore>, String) = match kind {
            StoreKind::Local => {
                if let Some((key, _)) = store_options.first() {
                    return Err(config_err(format!(
                        "option {key:?} applies to s3:// and gs:// locations only"
                    )));
                }
                let path = std::path::Path::new(rest);
                match mode {
                    // A directory that already exists keeps its mode: its owner chose it.
                    OpenMode::Create => std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(LocalModes::PRIVATE.dir)
                        .create(path)
                        .map_err(|e| Error::io("creating repository directory", path, e))?,
                    OpenMode::Existing => {
                        if !path.is_dir() {
                            return Err(Error::NoRepository {
                                location: shown_location,
                            });
                        }
                    }
                }
                let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| config_err(e.to_string()))?
                    .with_automatic_cleanup(true);
                let root = std::fs::canonicalize(path)
                    .map_err(|e| Error::io("opening repository directory", path, e))?;
                let root_mode = std::fs::metadata(&root)
                    .map_err(|e| Error::io("opening repository directory", path, e))?
                    .permissions()
                    .mode();
                local_modes = LocalModes::for_root(root_mode);
                local_root = Some(root);
                (Arc::new(store), String::new())
            }
            StoreKind::S3 => {
                let (bucket, prefix) = split_bucket(rest);
                if bucket.is_empty() {
                    return Err(config_err("no bucket named: use s3://BUCKET/PREFIX".into()));
                }
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in &store_options {
                    let parsed: AmazonS3ConfigKey =
                        key.to_ascii_lowercase().parse().map_err(|_| {
                            config_err(format!("unknown S3 option {key:?} (see docs/storage.md)"))
                        })?;
                    builder = builder.with_config(parsed, value);
                }
                let store = builder
                    .with_retry(retry)
                    .build()
                    .map_err(|e| config_err(scrub_with(&secrets, &e.to_string())))?;
                (Arc::new(store), prefix)
            }
            StoreKind::Gcs => {
                let (bucket, prefix) = split_bucket(rest);
                if bucket.is_empty() {
                    return Err(config_err("no bucket named: use gs://BUCKET/PREFIX".into()));
                }
                let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
                for (key, value) in &store_options {
                    let parsed: GoogleConfigKey =
                        key.to_ascii_lowercase().parse().map_err(|_| {
                            config_err(format!("unknown GCS option {key:?} (see docs/storage.md)"))
                        })?;
                    builder = builder.with_config(parsed, value);
                }
                let store = builder
                    .with_retry(retry)
                    .build()
                    .map_err(|e| config_err(scrub_with(&secrets, &e.to_string())))?;
                (Arc::new(store), prefix)
            }
            StoreKind::Memory => unreachable!("refused above"),
        };
        let remote = matches!(kind, StoreKind::S3 | StoreKind::Gcs);
        let default_connections = if remote {
            DEFAULT_REMOTE_CONNECTIONS
        } else {
            DEFAULT_LOCAL_CONNECTIONS
        };
        Ok(Storage {
            store,
            kind,
            root,
            location: shown_location,
            runtime: runtime()?,
            connections: options.connections.unwrap_or(default_connections).max(1),
            secrets: Arc::new(secrets),
            listings: Arc::default(),
            cache_root: if remote {
                options.cache_root.clone()
            } else {
                None
            },
            cache: None,
            local_root,
            local_modes,
            open_packs: Arc::default(),
            direct_packs: Arc::default(),
            direct_reads: Arc::new(true.into()),
        })
    }

    /// A fresh in-memory store, for tests inside one process.
    pub fn in_memory() -> Result<Storage> {
        Ok(Storage {
            store: Arc::new(InMemory::new()),
            kind: StoreKind::Memory,
            root: String::new(),
            location: "memory://".into(),
            runtime: runtime()?,
            connections: 1,
            secrets: Arc::default(),
            listings: Arc::default(),
            cache_root: None,
            cache: None,
            local_root: None,
            local_modes: LocalModes::PRIVATE,
            open_packs: Arc::default(),
            direct_packs: Arc::default(),
            direct_reads: Arc::new(false.into()),
        })
    }

    /// Uses a metadata cache under `cache_root` (for tests of the cache on any store).
    pub fn with_cache_root(mut self, cache_root: PathBuf) -> Storage {
        self.cache_root = Some(cache_root);
        self
    }

    /// Starts serving immutable metadata of repository `repo_id` from the cache, if this handle
    /// was opened with a cache root. A cache that cannot be created is skipped silently: it is
    /// an optimisation, never a requirement.
    pub fn enable_cache(&mut self, repo_id: &str) {
        if let Some(root) = &self.cache_root {
            self.cache = Cache::open(root, repo_id).ok().map(Arc::new);
        }
    }

    /// The cache in use, if any.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// What kind of store this is.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// How many requests to run at once.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Whether [`Self::prefetch`] does anything here (a local directory).
    pub fn prefetches(&self) -> bool {
        self.local_root.is_some()
    }

    /// Sets how many requests to run at once (at least 1).
    pub fn set_connections(&mut self, n: usize) {
        self.connections = n.max(1);
    }

    /// How the user named this location.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> StorePath {
        if self.root.is_empty() {
            StorePath::from(key)
        } else {
            StorePath::from(format!("{}/{}", self.root, key))
        }
    }

    /// `text` with every configured secret replaced by `<redacted>` and the user information
    /// of every URL in it by `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub_with(&self.secrets, text)
    }

    fn err(&self, operation: &'static str, key: &str, source: object_store::Error) -> Error {
        let hint = match &source {
            object_store::Error::PermissionDenied { .. } => {
                "; access denied: check the credentials and that they may perform this operation on the bucket (docs/storage.md lists the permissions)"
            }
            object_store::Error::Unauthenticated { .. } => {
                "; authentication failed: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)"
            }
            e if e.to_string().contains("NoSuchBucket") => "; the bucket does not exist",
            _ => "",
        };
        Error::Storage {
            operation,
            path: format!("{}/{}", self.location.trim_end_matches('/'), key),
            reason: format!("{}{hint}", self.scrub(&source.to_string())),
        }
    }

    /// Remembers a new object in this handle's listings.
    fn note_put(&self, key: &str, size: u64) {
        let mut listings = crate::repository::writer::lock(&self.listings);
        for (dir, list) in listings.iter_mut() {
            if key.starts_with(&format!("{dir}/")) {
                if let Err(at) = list.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
                    list.insert(at, (key.to_string(), size));
                }
            }
        }
    }

    /// Writes an immutable, content-addressed object. If the key exists it already holds these
    /// bytes (its name is their hash), so that counts as success. Large objects go to object
    /// stores in parts; a multipart upload cannot be conditional, which is harmless here since
    /// a second upload of the same name holds the same bytes.
    pub fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        if let Some(root) = &self.local_root {
            let size = bytes.len() as u64;
            put_local(root, self.local_modes, key, &bytes)?;
            self.note_put(key, size);
            return Ok(());
        }
        let path = self.path(key);
        let size = bytes.len() as u64;
        let multipart = matches!(self.kind, StoreKind::S3 | StoreKind::Gcs)
            && bytes.len() >= MULTIPART_THRESHOLD;
        let result = if multipart {
            self.runtime.block_on(async {
                let upload = self.store.put_multipart(&path).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_SIZE);
                let mut rest = bytes;
                while !rest.is_empty() {
                    if let Err(e) = writer.wait_for_capacity(MULTIPART_CONCURRENCY).await {
                        let _ = writer.abort().await;
                        return Err(e);
                    }
                    let part = rest.split_to(rest.len().min(MULTIPART_PART_SIZE));
                    writer.put(part);
                }
                writer.finish().await.map(|_| ())
            })
        } else {
            let payload = PutPayload::from(bytes);
            self.runtime
                .block_on(self.store.put_opts(&path, payload, PutMode::Create.into()))
                .map(|_| ())
        };
        match result {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {
                self.note_put(key, size);
                Ok(())
            }
            Err(e) => Err(self.err("write", key, e)),
        }
    }

    /// Reads a whole object. A missing object gives [`Error::Missing`] naming `what`. Snapshots
    /// and index files come from the cache when it holds them.
    pub fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        let cacheable = key.starts_with("snapshots/") || key.starts_with("index/");
        if cacheable {
            self.get_cached(what, key)
        } else {
            self.fetch(what, key)
        }
    }

    /// Reads a whole immutable, content-named object through the cache (if enabled): a cached
    /// copy is used only if its hash matches its name; a fetched copy is cached only if so.
    pub fn get_cached(&self, what: &'static str, key: &str) -> Result<Bytes> {
        let Some(cache) = &self.cache else {
            return self.fetch(what, key);
        };
        if let Some(bytes) = cache.get(key) {
            return Ok(bytes);
        }
        let bytes = self.fetch(what, key)?;
        cache.put(key, &bytes);
        Ok(bytes)
    }

    /// Reads a whole object of at most `max` bytes. Its size is learned first, from this
    /// handle's listing of its directory when there is one, else from the file's metadata (a
    /// local directory) or a HEAD request, and an object above `max` is refused with
    /// [`Error::Corrupt`] naming it and the limit before a byte of it is read or a buffer
    /// allocated. Only the learned size is then read, so an object that grew meanwhile cannot
    /// make the read larger (its hash no longer matches its name). Snapshots and index files
    /// come from the cache when it holds them (a cached file above `max` is not read either).
    pub fn get_bounded(&self, what: &'static str, key: &str, max: u64) -> Result<Bytes> {
        if key.starts_with("snapshots/") || key.starts_with("index/") {
            self.get_bounded_cached(what, key, max)
        } else {
            self.fetch_bounded(what, key, max)
        }
    }

    /// As [`Self::get_bounded`], through the cache (if enabled) whatever the key, as
    /// [`Self::get_cached`] does.
    pub fn get_bounded_cached(&self, what: &'static str, key: &str, max: u64) -> Result<Bytes> {
        let Some(cache) = &self.cache else {
            return self.fetch_bounded(what, key, max);
        };
        if let Some(bytes) = cache.get_bounded(key, max) {
            return Ok(bytes);
        }
        let bytes = self.fetch_bounded(what, key, max)?;
        cache.put(key, &bytes);
        Ok(bytes)
    }

    fn fetch_bounded(&self, what: &'static str, key: &str, max: u64) -> Result<Bytes> {
        let too_large = |size: u64| {
            Error::corrupt(
                what,
                key,
                format!("{size} bytes is more than the maximum of {max} bytes for a {what}"),
            )
        };
        if let Some(root) = &self.local_root {
            let file = self.open_local(what, key, root)?;
            let size = file
                .metadata()
                .map_err(|e| Error::io("reading", root.join(key), e))?
                .len();
            if size > max {
                return Err(too_large(size));
            }
            let mut buf = vec![0u8; usize::try_from(size).map_err(|_| too_large(size))?];
            read_exact_at(&file, root, what, key, 0, &mut buf)?;
            return Ok(Bytes::from(buf));
        }
        let size = match self.listed_size(key) {
            Some(size) => size,
            None => self.size(key)?.ok_or_else(|| Error::Missing {
                what,
                id: key.to_string(),
            })?,
        };
        if size > max {
            return Err(too_large(size));
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        self.get_range(what, key, 0..size)
    }

    /// The size of `key` in this handle's listing of its directory, if it made one.
    fn listed_size(&self, key: &str) -> Option<u64> {
        let dir = key.split('/').next()?;
        let listings = crate::repository::writer::lock(&self.listings);
        let list = listings.get(dir)?;
        let at = list.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(list[at].1)
    }

    fn fetch(&self, what: &'static str, key: &str) -> Result<Bytes> {
        if let Some(root) = &self.local_root {
            return self.read_local(what, key, root, None);
        }
        let path = self.path(key);
        let result = self
            .runtime
            .block_on(async { self.store.get(&path).await?.bytes().await });
        result.map_err(|e| self.map_read_err(what, key, e))
    }

    /// Reads `range` of an object; the result has exactly `range` length or is an error.
    pub fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        if let Some(root) = &self.local_root {
            return self.read_local(what, key, root, Some(range));
        }
        let path = self.path(key);
        let want = range.end - range.start;
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&path, range.clone()))
            .map_err(|e| self.map_read_err(what, key, e))?;
        if bytes.len() as u64 != want {
            return Err(Error::corrupt(
                what,
                key,
                format!(
                    "read {} bytes of range {}..{}, expected {want}",
                    bytes.len(),
                    range.start,
                    range.end
                ),
            ));
        }
        Ok(bytes)
    }

    /// Reads `range` of an object and hands the bytes to `f`. A local read goes into a buffer
    /// this thread keeps for the next read (no allocation and no fresh pages per read); other
    /// stores fetch as [`Self::get_range`] does.
    pub fn with_range<R>(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let Some(root) = &self.local_root else {
            return f(&self.get_range(what, key, range)?);
        };
        let want = range.end.saturating_sub(range.start);
        if want > KEPT_READ_BUFFER {
            return f(&self.read_local(what, key, root, Some(range))?);
        }
        BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                let want = want as usize;
                if buf.len() < want {
                    buf.resize(want, 0);
                }
                self.read_local_into(what, key, root, range.start, &mut buf[..want])?;
                f(&buf[..want])
            }
            // A read from inside `f` on this thread: use a buffer of its own.
            Err(_) => f(&self.read_local(what, key, root, Some(range))?),
        })
    }

    /// As [`Self::with_range`], for a large range of a local pack read once and not again soon
    /// (a restored file's blobs): read with `O_DIRECT` into this thread's reused buffer
    /// ([`crate::fs::direct::read_direct`]), so no page-cache pages are allocated and nothing is
    /// copied out of them. Ranges under [`crate::fs::direct::WORTH_IT`], other stores, and file
    /// systems that refuse direct reads go through [`Self::with_range`].
    pub fn with_range_direct<R>(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        use std::sync::atomic::Ordering;
        let len = range.end.saturating_sub(range.start);
        let (Some(root), true) = (&self.local_root, key.starts_with("data/")) else {
            return self.with_range(what, key, range, f);
        };
        if len < crate::fs::direct::WORTH_IT as u64
            || len > KEPT_READ_BUFFER
            || !self.reads_directly()
        {
            return self.with_range(what, key, range, f);
        }
        let file = match kept_open(
            &self.direct_packs,
            root,
            key,
            crate::fs::direct::open_for_direct_reads,
        ) {
            Ok(file) => file,
            // Missing, refused or anything else: the ordinary read names the problem.
            Err(e) => {
                if e.raw_os_error() == Some(nix::libc::EINVAL) {
                    self.direct_reads.store(false, Ordering::Relaxed);
                }
                return self.with_range(what, key, range, f);
            }
        };
        let mut f = Some(f);
        let read = crate::fs::direct::read_direct(&file, range.start, len as usize, |bytes| {
            if bytes.len() as u64 != len {
                return Err(short_read(what, key, bytes.len(), &range));
            }
            match f.take() {
                Some(f) => f(bytes),
                None => unreachable!("read_direct calls its closure once"),
            }
        });
        match (read, f) {
            (Ok(result), _) => result,
            // The direct read failed before handing anything over: read the ordinary way,
            // which reports any real problem with the object itself.
            (Err(e), Some(f)) => {
                if e.raw_os_error() == Some(nix::libc::EINVAL) {
                    self.direct_reads.store(false, Ordering::Relaxed);
                }
                self.with_range(what, key, range, f)
            }
            (Err(e), None) => Err(Error::io("reading", root.join(key), e)),
        }
    }

    /// Asks for `range` of an object to be read into memory ahead of a [`Self::get_range`] or
    /// [`Self::with_range`] of it (local objects: `posix_fadvise(WILLNEED)`, which starts the
    /// reads and returns). Packs are written around the page cache, so without this every read
    /// of a freshly written pack waits for the disk. Advice only: errors are ignored, and object
    /// stores do nothing (their reads are requests of their own).
    pub fn prefetch(&self, key: &str, range: Range<u64>) {
        let Some(root) = &self.local_root else { return };
        #[cfg(target_os = "linux")]
        if let Ok(file) = self.open_local("pack", key, root) {
            let len = range.end.saturating_sub(range.start);
            let _ = nix::fcntl::posix_fadvise(
                &*file,
                i64::try_from(range.start).unwrap_or(i64::MAX),
                i64::try_from(len).unwrap_or(i64::MAX),
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (root, key, range);
    }

    /// Reads a local object (all of it, or `range`) with plain file system calls.
    fn read_local(
        &self,
        what: &'static str,
        key: &str,
        root: &std::path::Path,
        range: Option<Range<u64>>,
    ) -> Result<Bytes> {
        let file = self.open_local(what, key, root)?;
        let range = match range {
            Some(r) => r,
            None => {
                let len = file
                    .metadata()
                    .map_err(|e| Error::io("reading", root.join(key), e))?
                    .len();
                0..len
            }
        };
        let want = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| {
            Error::corrupt(what, key, format!("range {range:?} too large for memory"))
        })?;
        let mut buf = vec![0u8; want];
        read_exact_at(&file, root, what, key, range.start, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Reads `buf.len()` bytes of a local object from `offset`.
    fn read_local_into(
        &self,
        what: &'static str,
        key: &str,
        root: &std::path::Path,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let file = self.open_local(what, key, root)?;
        read_exact_at(&file, root, what, key, offset, buf)
    }

    /// Opens the local object `key` below `root` for reading (a pack from [`OpenPacks`] when
    /// it is open already); a missing file is [`Error::Missing`] naming `what`.
    fn open_local(
        &self,
        what: &'static str,
        key: &str,
        root: &std::path::Path,
    ) -> Result<Arc<std::fs::File>> {
        let opened = if key.starts_with("data/") {
            kept_open(&self.open_packs, root, key, |p| std::fs::File::open(p))
        } else {
            std::fs::File::open(root.join(key)).map(Arc::new)
        };
        opened.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Missing {
                what,
                id: key.to_string(),
            },
            _ => Error::io("reading", root.join(key), e),
        })
    }

    /// Whether large local reads of packs bypass the page cache ([`Self::with_range_direct`]):
    /// a local directory whose file system has not refused a direct read. Such reads wait for
    /// the disk, so the read-side operations run one thread more than the cores then.
    pub fn reads_directly(&self) -> bool {
        self.local_root.is_some() && self.direct_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn map_read_err(&self, what: &'static str, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } if !e.to_string().contains("NoSuchBucket") => {
                Error::Missing {
                    what,
                    id: key.to_string(),
                }
            }
            // A range past the end of the object means it is shorter than the index says.
            e @ object_store::Error::Generic { .. } if e.to_string().contains("range") => {
                Error::corrupt(
                    what,
                    key,
                    format!("shorter than expected ({})", self.scrub(&e.to_string())),
                )
            }
            e => self.err("read", key, e),
        }
    }

    /// The size of an object, or `None` if it does not exist.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    /// Every object under `dir/` with its size, as keys relative to the repository root,
    /// sorted. The store is listed once per handle and directory; later calls see this handle's
    /// own writes and deletes but not other writers'. Cached objects under `dir/` that the
    /// listing no longer shows (removed by prune) are dropped from the cache.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        if let Some(list) = crate::repository::writer::lock(&self.listings).get(dir) {
            return Ok(list.clone());
        }
        let out = self.list_uncached(dir)?;
        if let Some(cache) = &self.cache {
            cache.retain(dir, &out);
        }
        crate::repository::writer::lock(&self.listings).insert(dir.to_string(), out.clone());
        Ok(out)
    }

    /// The objects under `dir/` split by name: those Coffer writes there (see
    /// [`is_object_name`]) and stray ones (left by other programs, e.g. NFS's `.nfsXXXX` files,
    /// or put there by hand), which every command ignores and `check` reports.
    pub fn list_objects(&self, dir: &str) -> Result<Listing> {
        let mut listing = Listing::default();
        for (key, size) in self.list(dir)? {
            if is_object_name(dir, &key) {
                listing.objects.push((key, size));
            } else {
                listing.stray.push((key, size));
            }
        }
        Ok(listing)
    }

    /// Forgets every listing this handle remembers, so the next [`Storage::list`] of each
    /// directory asks the store again. Prune calls it once it holds the lease: what it decides
    /// must rest on what the store holds then, not on what it held when the handle was opened.
    pub fn forget_listings(&self) {
        crate::repository::writer::lock(&self.listings).clear();
    }

    /// Lists `dir/` in the store, bypassing this handle's memory of earlier listings.
    pub fn list_uncached(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_modified(dir)?
            .into_iter()
            .map(|(key, size, _)| (key, size))
            .collect())
    }

    /// Every object under `dir/` with its size and the store's modification time (a local
    /// file's mtime, an object's `Last-Modified`), asked of the store afresh and sorted; the
    /// listing this handle remembers for `dir` is replaced by it.
    pub fn list_with_times(&self, dir: &str) -> Result<Vec<(String, u64, jiff::Timestamp)>> {
        let out = self.list_modified(dir)?;
        let plain: Vec<(String, u64)> = out.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
        if let Some(cache) = &self.cache {
            cache.retain(dir, &plain);
        }
        crate::repository::writer::lock(&self.listings).insert(dir.to_string(), plain);
        Ok(out)
    }

    fn list_modified(&self, dir: &str) -> Result<Vec<(String, u64, jiff::Timestamp)>> {
        let prefix = self.path(dir);
        let strip = if self.root.is_empty() {
            String::new()
        } else {
            format!("{}/", self.root)
        };
        let result: Result<Vec<(String, u64, jiff::Timestamp)>> = self.runtime.block_on(async {
            let mut stream = self.store.list(Some(&prefix));
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                let meta = item.map_err(|e| self.err("list", dir, e))?;
                let key = meta.location.as_ref();
                let key = key.strip_prefix(&strip).unwrap_or(key).to_string();
                // A time out of jiff's range (years beyond 9999) reads as the epoch: old.
                let modified = jiff::Timestamp::new(
                    meta.last_modified.timestamp(),
                    meta.last_modified.timestamp_subsec_nanos() as i32,
                )
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                out.push((key, meta.size, modified));
            }
            Ok(out)
        });
        let mut out = result?;
        out.sort();
        Ok(out)
    }

    /// Deletes an object; deleting a missing object succeeds (deletion is idempotent).
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.open_packs.forget(key);
                self.direct_packs.forget(key);
                for list in crate::repository::writer::lock(&self.listings).values_mut() {
                    list.retain(|(k, _)| k != key);
                }
                if let Some(cache) = &self.cache {
                    cache.remove(key);
                }
                Ok(())
            }
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

/// A directory's listing split by name ([`Storage::list_objects`]); keys with their sizes,
/// sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Keys with names Coffer writes in the directory.
    pub objects: Vec<(String, u64)>,
    /// Every other key: not Coffer's, never read, never deleted.
    pub stray: Vec<(String, u64)>,
}

/// Whether `key` is a name Coffer writes under `dir`: `dir/` and 64 lowercase hex digits (the
/// object's id), and for packs `data/` the id's first two digits, `/` and the id.
pub fn is_object_name(dir: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let is_id =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if dir == "data" {
        match rest.split_once('/') {
            Some((fan, id)) => is_id(id) && id.starts_with(fan) && fan.len() == 2,
            None => false,
        }
    } else {
        is_id(rest)
    }
}

fn scrub_with(secrets: &[String], text: &str) -> String {
    let mut out = scrub_url_credentials(text);
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "<redacted>");
        }
    }
    out
}

/// Characters that end the authority part of a URL (`user:password@host:port`) in a message.
/// Sub-delimiters (`!$&'()*+,;=`) may appear unencoded in a password, so they do not end it.
fn ends_authority(c: char) -> bool {
    matches!(
        c,
        '/' | '?' | '#' | '"' | '<' | '>' | '`' | '\\' | '{' | '}' | '|' | '^'
    ) || c.is_whitespace()
        || c.is_control()
}

/// `text` with the user information of every URL in it (`scheme://USER:PASSWORD@host...`)
/// replaced by `***`: `http://***@127.0.0.1:9000/bucket`.
pub fn scrub_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(ends_authority).unwrap_or(after.len());
        let (authority, tail) = after.split_at(end);
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The user name and password written into the URLs in `value`, if any.
fn url_credentials(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("://") {
        let after = &rest[at + 3..];
        let end = after.find(ends_authority).unwrap_or(after.len());
        if let Some(user_end) = after[..end].rfind('@') {
            let userinfo = &after[..user_end];
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    found.push(user.to_string());
                    found.push(password.to_string());
                }
                None => found.push(userinfo.to_string()),
            }
        }
        rest = &after[end..];
    }
    found.retain(|s| !s.is_empty());
    found
}

/// Writes a new local object durably: to a staging file in the object's directory, flushed to
/// disk, then linked under its name (which fails if the name exists: it then holds these bytes,
/// since names are hashes) and the directory flushed, so that once this returns the object
/// survives a power loss, and the index or snapshot written after it never names a lost pack.
/// Files and directories get `modes`.
fn put_local(root: &std::path::Path, modes: LocalModes, key: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(modes.dir)
        .create(dir)
    {
        return Err(Error::io("creating directory", dir, e));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut nonce = [0u8; 8];
    coffer_crypto::random_fill(&mut nonce)
        .map_err(|e| Error::InvalidInput(format!("random numbers: {e}")))?;
    // `name#digits` is the staging name listings skip (object_store's convention), so a
    // concurrent listing never sees a half-written object.
    let tmp = dir.join(format!("{name}#{}", u64::from_le_bytes(nonce)));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(modes.file)
            .open(&tmp)?;
        if bytes.len() >= crate::fs::direct::WORTH_IT {
            // Flushed to disk at once below: no use for a copy in the page cache.
            let mut direct = crate::fs::direct::DirectWriter::new(&file);
            direct.write_all(bytes)?;
            direct.finish()?;
        } else {
            file.write_all(bytes)?;
        }
        ignore_unsupported(file.sync_all())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("writing", &path, e));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io("writing", &path, e)),
    }
    std::fs::File::open(dir)
        .and_then(|d| ignore_unsupported(d.sync_all()))
        .map_err(|e| Error::io("flushing directory", dir, e))
}

/// Some file systems (SMB mounts, some FUSE ones) cannot flush on request; writing there still
/// works, without the guarantee.
fn ignore_unsupported(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e)
            if e.kind() == std::io::ErrorKind::Unsupported
                || e.raw_os_error() == Some(nix::libc::EINVAL)
                || e.raw_os_error() == Some(nix::libc::ENOTSUP) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The pack file `key` below `root` from `kept`, or opened with `open` and kept.
fn kept_open(
    kept: &OpenPacks,
    root: &std::path::Path,
    key: &str,
    open: impl FnOnce(&std::path::Path) -> std::io::Result<std::fs::File>,
) -> std::io::Result<Arc<std::fs::File>> {
    if let Some(file) = kept.get(key) {
        return Ok(file);
    }
    let file = Arc::new(open(&root.join(key))?);
    kept.put(key, file.clone());
    Ok(file)
}

/// A read of `range` of `key` that found only `got` bytes: the object is shorter than the
/// index says.
fn short_read(what: &'static str, key: &str, got: usize, range: &Range<u64>) -> Error {
    Error::corrupt(
        what,
        key,
        format!(
            "shorter than expected (read {got} bytes of range {}..{})",
            range.start, range.end
        ),
    )
}

/// Fills `buf` from `offset` of `file`; running out of bytes means the object is shorter than
/// the index says.
fn read_exact_at(
    file: &std::fs::File,
    root: &std::path::Path,
    what: &'static str,
    key: &str,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(short_read(
                    what,
                    key,
                    done,
                    &(offset..offset + buf.len() as u64),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading", root.join(key), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_and_stray_names_are_told_apart() {
        let id = "ab".to_string() + &"0".repeat(62);
        assert!(is_object_name("snapshots", &format!("snapshots/{id}")));
        assert!(is_object_name("data", &format!("data/ab/{id}")));
        for (dir, stray) in [
            ("snapshots", "snapshots/.nfs0000abcd".to_string()),
            ("snapshots", format!("snapshots/{}", id.to_uppercase())),
            ("snapshots", format!("snapshots/{id}0")),
            ("snapshots", format!("snapshots/{}", &id[1..])),
            ("snapshots", format!("snapshots/x/{id}")),
            ("snapshots", format!("index/{id}")),
            ("data", format!("data/cd/{id}")),
            ("data", format!("data/{id}")),
            ("data", format!("data/ab/{id}.tmp")),
        ] {
            assert!(!is_object_name(dir, &stray), "{stray}");
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        storage
            .put_new(&format!("snapshots/{id}"), Bytes::from_static(b"s"))
            .unwrap();
        std::fs::write(dir.path().join("snapshots/.nfs0000abcd"), b"junk").unwrap();
        std::fs::write(dir.path().join("snapshots/notes.txt"), b"junk!").unwrap();
        storage.forget_listings();
        let listing = storage.list_objects("snapshots").unwrap();
        assert_eq!(listing.objects, vec![(format!("snapshots/{id}"), 1)]);
        assert_eq!(
            listing.stray,
            vec![
                ("snapshots/.nfs0000abcd".to_string(), 4),
                ("snapshots/notes.txt".to_string(), 5)
            ]
        );
    }

    #[test]
    fn bounded_reads_on_a_local_directory_refuse_a_huge_sparse_file_unread() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        // 5 GiB of holes: reading it would need 5 GiB of memory.
        std::fs::create_dir_all(dir.path().join("index")).unwrap();
        let huge = std::fs::File::create(dir.path().join("index/huge")).unwrap();
        huge.set_len(5 << 30).unwrap();
        let err = storage
            .get_bounded("index", "index/huge", 1 << 20)
            .unwrap_err();
        assert!(err.to_string().contains("5368709120 bytes"), "{err}");
    }

    #[test]
    fn local_writes_leave_no_staging_files_and_listings_skip_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        storage
            .put_new("data/ab/abcd", Bytes::from_static(b"first"))
            .unwrap();
        // Same name again: already there, which counts as success; the bytes stay.
        storage
            .put_new("data/ab/abcd", Bytes::from_static(b"first"))
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("data/ab"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["abcd"]);
        assert_eq!(&storage.get("pack", "data/ab/abcd").unwrap()[..], b"first");
        // A staging file left by a crash is not an object.
        std::fs::write(dir.path().join("data/ab/abce#123456"), b"half").unwrap();
        let fresh = Storage::open(dir.path().to_str().unwrap(), OpenMode::Existing).unwrap();
        let listed: Vec<String> = fresh
            .list("data")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed, ["data/ab/abcd"]);
    }

    #[test]
    fn local_modes_take_the_group_bits_of_the_root_and_never_others() {
        let m = |file, dir| LocalModes { file, dir };
        assert_eq!(LocalModes::for_root(0o700), m(0o600, 0o700));
        assert_eq!(LocalModes::for_root(0o750), m(0o640, 0o750));
        assert_eq!(LocalModes::for_root(0o770), m(0o660, 0o770));
        assert_eq!(LocalModes::for_root(0o2770), m(0o660, 0o770));
        assert_eq!(LocalModes::for_root(0o755), m(0o640, 0o750));
        assert_eq!(LocalModes::for_root(0o707), m(0o600, 0o700));
        assert_eq!(LocalModes::for_root(0o777), m(0o660, 0o770));
        assert_eq!(LocalModes::for_root(0o40710), m(0o600, 0o710));
    }

    #[test]
    fn kept_pack_descriptors_read_right_and_a_deleted_pack_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        // More packs than are kept open, each read twice in turn: every read returns its own
        // pack's bytes, whether its descriptor was kept or closed and opened again.
        let key = |i: usize| format!("data/{:02x}/pack-{i}", i % 256);
        for i in 0..OPEN_PACKS + 8 {
            let body = format!("pack number {i}");
            storage.put_new(&key(i), Bytes::from(body)).unwrap();
        }
        for _ in 0..2 {
            for i in 0..OPEN_PACKS + 8 {
                let want = format!("pack number {i}");
                let got = storage
                    .get_range("pack", &key(i), 5..want.len() as u64)
                    .unwrap();
                assert_eq!(&got[..], &want.as_bytes()[5..]);
                storage
                    .with_range("pack", &key(i), 0..4, |b| {
                        assert_eq!(b, b"pack");
                        Ok(())
                    })
                    .unwrap();
            }
        }
        assert!(crate::repository::writer::lock(&storage.open_packs.0).len() <= OPEN_PACKS);
        // A pack read (so kept open) and then deleted through the handle is missing, not
        // served from the kept descriptor.
        let last = key(OPEN_PACKS + 7);
        storage.get_range("pack", &last, 0..4).unwrap();
        storage.delete(&last).unwrap();
        assert!(matches!(
            storage.get_range("pack", &last, 0..4),
            Err(Error::Missing { what: "pack", .. })
        ));
        // Written again (as prune's repair could), it reads back its new bytes.
        storage
            .put_new(&last, Bytes::from_static(b"rewritten"))
            .unwrap();
        assert_eq!(
            &storage.get_range("pack", &last, 0..9).unwrap()[..],
            b"rewritten"
        );
    }

    #[test]
    fn direct_range_reads_return_the_bytes_and_name_damage() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
        storage
            .put_new("data/aa/pack", Bytes::from(body.clone()))
            .unwrap();
        let read = |range: Range<u64>| {
            storage.with_range_direct("pack", "data/aa/pack", range, |b| Ok(b.to_vec()))
        };
        // Large unaligned ranges (direct where the file system allows), a small one (ordinary).
        for (a, b) in [
            (1u64, 300_001u64),
            (4096, 2_000_000),
            (2_999_000 - 300_000, 2_999_000),
            (10, 20),
        ] {
            assert_eq!(
                read(a..b).unwrap(),
                &body[a as usize..b as usize],
                "{a}..{b}"
            );
        }
        // Past the end: the pack is shorter than the index says, an error naming it.
        let err = read(2_900_000..3_300_000).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { .. })
                && err.to_string().contains("shorter than expected"),
            "{err}"
        );
        // Truncated after being kept open: still an error, not a panic or stale bytes.
        read(0..400_000).unwrap();
        let path = dir.path().join("data/aa/pack");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100_000)
            .unwrap();
        assert!(read(0..400_000).is_err());
        // Deleted through the handle: missing, not read from the kept descriptor.
        storage.delete("data/aa/pack").unwrap();
        assert!(matches!(
            read(0..400_000),
            Err(Error::Missing { what: "pack", .. })
        ));
    }

    #[test]
    fn unsupported_locations_are_named() {
        for loc in ["memory://", "ftp://host/x", "", "s3://", "gs:///x"] {
            let err = Storage::open(loc, OpenMode::Existing)
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot open storage"), "{loc}: {err}");
        }
    }

    fn opts(pairs: &[(&str, &str)]) -> StorageOptions {
        StorageOptions {
            options: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..StorageOptions::default()
        }
    }

    #[test]
    fn s3_urls_and_options_build_offline() {
        let s = Storage::open_with(
            "s3://bucket/some//prefix/",
            OpenMode::Existing,
            &opts(&[
                ("aws_access_key_id", "AKIDEXAMPLE"),
                ("secret_access_key", "wJalrXUtnFEMI-very-secret"),
                ("region", "eu-west-1"),
                ("endpoint", "http://127.0.0.1:9"),
                ("allow_http", "true"),
                ("max_retries", "1"),
                ("retry_timeout", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kind(), StoreKind::S3);
        assert_eq!(s.root, "some/prefix");
        assert_eq!(s.connections(), DEFAULT_REMOTE_CONNECTIONS);
        assert_eq!(s.path("config").as_ref(), "some/prefix/config");
        assert_eq!(
            s.scrub("x wJalrXUtnFEMI-very-secret y AKIDEXAMPLE"),
            "x <redacted> y <redacted>"
        );
        assert!(!format!("{s:?}").contains("very-secret"));
        let err = Storage::open_with(
            "s3://bucket",
            OpenMode::Existing,
            &opts(&[("no_such_option", "wJalrXUtnFEMI-very-secret")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown S3 option \"no_such_option\""),
            "{err}"
        );
        assert!(!err.contains("very-secret"), "{err}");
        let err = Storage::open_with(
            "s3://b",
            OpenMode::Existing,
            &opts(&[("retry_timeout", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("retry_timeout"), "{err}");
        let err = Storage::open_with("/tmp/x", OpenMode::Existing, &opts(&[("region", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3:// and gs:// locations only"), "{err}");
    }

    #[test]
    fn url_credentials_are_scrubbed_from_messages() {
        let cases = [
            (
                "Error performing HEAD http://user:pa55word@127.0.0.1:9000/b/config in 1ms",
                "Error performing HEAD http://***@127.0.0.1:9000/b/config in 1ms",
            ),
            ("https://key@host", "https://***@host"),
            ("(http://u:p!$&'()*+,;=@h:1)", "(http://***@h:1)"),
            ("http://u:p@[::1]:9000?x=1", "http://***@[::1]:9000?x=1"),
            (
                "a http://u:p@h/ and s3://k:s@b/p",
                "a http://***@h/ and s3://***@b/p",
            ),
            ("\"http://u:p@h\"", "\"http://***@h\""),
            // No user information, or an @ after the authority: unchanged.
            ("http://127.0.0.1:9000/a@b", "http://127.0.0.1:9000/a@b"),
            ("mail me at a@b.c", "mail me at a@b.c"),
            ("/var/backups/app", "/var/backups/app"),
            ("file:///srv/x@y", "file:///srv/x@y"),
            ("ends with ://", "ends with ://"),
            ("", ""),
        ];
        for (text, want) in cases {
            assert_eq!(scrub_url_credentials(text), want, "{text}");
        }
        assert_eq!(
            url_credentials("http://user:pa55word@h http://only@h http://h"),
            ["user", "pa55word", "only"]
        );
    }

    #[test]
    fn endpoint_credentials_never_show_in_messages_or_debug_output() {
        let endpoint = "http://urluser:pa55-in-url@127.0.0.1:9";
        let s = Storage::open_with(
            "s3://bucket/prefix",
            OpenMode::Existing,
            &opts(&[
                ("endpoint", endpoint),
                ("allow_http", "true"),
                ("max_retries", "0"),
            ]),
        )
        .unwrap();
        for shown in [
            format!("{s:?}"),
            format!("{:?}", opts(&[("endpoint", endpoint)])),
            s.scrub(&format!(
                "failed: {endpoint}/x; user urluser, password pa55-in-url"
            )),
            s.list_uncached("snapshots").unwrap_err().to_string(),
        ] {
            assert!(!shown.contains("pa55-in-url"), "{shown}");
            assert!(!shown.contains("urluser"), "{shown}");
        }
        // A location carrying user information is shown without it.
        let err = Storage::open_with(
            "s3://key:pa55-in-url@bucket/prefix",
            OpenMode::Existing,
            &opts(&[("no_such_option", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("pa55-in-url"), "{err}");
        assert!(err.contains("s3://***@bucket/prefix"), "{err}");
    }

    /// GCS can't be reached here (no emulator speaks its XML API), so the configuration mapping
    /// is checked offline: a service-account key with `disable_oauth` builds without a request.
    #[test]
    fn gs_urls_and_options_build_offline() {
        let key = serde_json::json!({
            "private_key": "",
            "private_key_id": "",
            "client_email": "coffer@example.invalid",
            "gcs_base_url": "http://127.0.0.1:9",
            "disable_oauth": true,
        })
        .to_string();
        let s = Storage::open_with(
            "gs://my-bucket/backups/app",
            OpenMode::Existing,
            &opts(&[("service_account_key", &key), ("max_retries", "0")]),
        )
        .unwrap();
        assert_eq!(s.kind(), StoreKind::Gcs);
        assert_eq!(s.root, "backups/app");
        assert!(s.scrub(&format!("leak {key}")).contains("<redacted>"));
        let err = Storage::open_with(
            "gs://my-bucket",
            OpenMode::Existing,
            &opts(&[("aws_region", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown GCS option"), "{err}");
        // Requests go to the configured base URL; nothing listens there, so the error names
        // the operation and the bucket after the (zero) retries.
        let err = s.list_uncached("snapshots").unwrap_err().to_string();
        assert!(
            err.contains("storage list of gs://my-bucket/backups/app/snapshots"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}
