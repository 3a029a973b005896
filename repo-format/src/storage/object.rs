//! A repository in an object store (S3 or an S3-compatible service, Google Cloud Storage)
//! through [`object_store`]: nothing about S3 or GCS is hand-rolled. URLs, credentials, request
//! signing, retries (exponential backoff bounded by `max_retries` and `retry_timeout`) and
//! multipart uploads are object_store's. Calls block the caller on a private tokio runtime, so
//! the repository code stays synchronous. May use the backend trait and the scrubbing of
//! secrets; nothing above storage.
//!
//! Errors are mapped by their type: `NotFound` is a missing object, `AlreadyExists` an object
//! already written (object_store itself turns the 412 `Precondition` answer to a conditional
//! create into it, on S3 and GCS alike), `PermissionDenied` and `Unauthenticated` get a hint on
//! credentials.
//! Two cases can only be told by the message text, because object_store gives them no type of
//! their own:
//! - a missing *bucket*: S3 answers 404 to it as to a missing key, with the code `NoSuchBucket`
//!   in the body, and object_store maps both to `NotFound`;
//! - a range that starts past the end of the object: S3 answers 416, which object_store returns
//!   as `Generic` around its `RetryError`, a type in a private module that cannot be downcast to
//!   read the status; its message names the range. (A range that ends past the end is caught by
//!   type-free means: fewer bytes than asked.)

use super::backend::{missing, short_read, too_large, Backend, ObjectInfo, ReadCost};
use super::scrub::Secrets;
use super::StoreKind;
use crate::error::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, Attributes, BackoffConfig, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Objects at least this large are uploaded to object stores in parts. Below it (packs of the
/// default and of most chosen sizes) one conditional PUT: one request and one round trip where
/// parts take at least three in a row (start, parts, complete), and the store does not have to
/// join the parts. Above it, parts bound what one failed request costs to send again.
pub const MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;
/// The size of one part of a multipart upload (S3 needs at least 5 MiB per part but the last).
pub const MULTIPART_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one object uploaded at once.
const MULTIPART_CONCURRENCY: usize = 2;
/// Default retries of one request that failed transiently.
pub const DEFAULT_MAX_RETRIES: usize = 4;
/// Default bound on the time spent retrying one request.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Coffer's own options of an object store: the retry policy and the storage class of data
/// packs; then the remaining (object_store) options.
type OwnOptions = (RetryConfig, Option<String>, Vec<(String, String)>);

/// The retry policy, the storage class of data packs and the remaining (object_store) options.
fn split_retry_options(
    options: &[(String, String)],
    config_err: &dyn Fn(String) -> Error,
) -> Result<OwnOptions> {
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
    let mut storage_class = None;
    for (key, value) in options {
        match key.as_str() {
            "storage_class" => {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(config_err(format!(
                        "option storage_class={value:?} is not a storage class name such as STANDARD_IA"
                    )));
                }
                storage_class = Some(value.clone());
            }
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
    Ok((retry, storage_class, rest))
}

/// Checks Coffer's own options (`max_retries`, `retry_timeout`, `storage_class`) and returns
/// the others (with `storage_class`, which only object stores have), so a local location can
/// refuse object-store options.
pub(crate) fn store_options(
    options: &[(String, String)],
    config_err: &dyn Fn(String) -> Error,
) -> Result<Vec<(String, String)>> {
    let (_, storage_class, mut rest) = split_retry_options(options, config_err)?;
    rest.extend(storage_class.map(|class| ("storage_class".to_string(), class)));
    Ok(rest)
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

/// A repository under a prefix of a bucket.
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    /// Key prefix of the repository inside the bucket.
    root: String,
    /// How the user named the location, for messages (never carries credentials).
    location: String,
    runtime: tokio::runtime::Runtime,
    /// Configured secret values, removed from every message.
    secrets: Arc<Secrets>,
    /// The storage class of data packs (`-o storage_class=…`); `None`: the bucket's default.
    storage_class: Option<String>,
}

impl ObjectBackend {
    /// Builds the client for `kind` (S3 or GCS) from the environment and `options`, for the
    /// location `bucket/prefix` given as `rest`. Makes no request: the first one reports a
    /// missing bucket or bad credentials.
    pub(crate) fn open(
        kind: StoreKind,
        rest: &str,
        options: &[(String, String)],
        secrets: Arc<Secrets>,
        shown: &str,
    ) -> Result<ObjectBackend> {
        let config_err = |reason: String| Error::StorageConfig {
            location: shown.to_string(),
            reason,
        };
        let (retry, storage_class, store_options) = split_retry_options(options, &config_err)?;
        let (bucket, root) = split_bucket(rest);
        let built = match kind {
            StoreKind::S3 => {
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
                builder
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            StoreKind::Gcs => {
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
                builder
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            StoreKind::Local | StoreKind::Memory => {
                return Err(Error::internal(
                    "an object store opened for a non-object location",
                ))
            }
        };
        let store = built.map_err(|e| config_err(secrets.scrub(&e.to_string())))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("coffer-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the I/O runtime for", "storage", e))?;
        Ok(ObjectBackend {
            store,
            root,
            location: shown.trim_end_matches('/').to_string(),
            runtime,
            secrets,
            storage_class,
        })
    }

    /// The key prefix of the repository inside the bucket.
    pub fn prefix(&self) -> &str {
        &self.root
    }

    fn path(&self, key: &str) -> StorePath {
        if self.root.is_empty() {
            StorePath::from(key)
        } else {
            StorePath::from(format!("{}/{}", self.root, key))
        }
    }

    /// A failed request, naming the operation and the location, with a hint where the error's
    /// type (or, for a missing bucket, its text: see the module comment) says what to do.
    fn err(&self, operation: &'static str, key: &str, source: object_store::Error) -> Error {
        let hint = match &source {
            object_store::Error::PermissionDenied { .. } => {
                "; access denied: check the credentials and that they may perform this operation on the bucket (docs/storage.md lists the permissions)"
            }
            object_store::Error::Unauthenticated { .. } => {
                "; authentication failed: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)"
            }
            e if is_missing_bucket(e) => "; the bucket does not exist",
            _ => "",
        };
        Error::Storage {
            operation,
            path: format!("{}/{}", self.location, key),
            reason: format!("{}{hint}", self.secrets.scrub(&source.to_string())),
        }
    }

    /// A failed read: a missing object, one shorter than the range asked for, or a failure.
    fn read_err(&self, what: &'static str, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } if !is_missing_bucket(&e) => missing(what, key),
            // A range past the end of the object means it is shorter than the index says.
            e @ object_store::Error::Generic { .. } if e.to_string().contains("range") => {
                Error::corrupt(
                    what,
                    key,
                    format!(
                        "shorter than expected ({})",
                        self.secrets.scrub(&e.to_string())
                    ),
                )
            }
            e => self.err("read", key, e),
        }
    }

    /// Uploads `bytes` in parts, at most [`MULTIPART_CONCURRENCY`] at once; an upload that
    /// fails is aborted so the store keeps no parts.
    async fn put_multipart(
        &self,
        path: &StorePath,
        bytes: Bytes,
        attributes: Attributes,
    ) -> object_store::Result<()> {
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let upload = self.store.put_multipart_opts(path, options).await?;
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
    }
}

impl ObjectBackend {
    /// One GET of a whole object of at most `max` bytes, its size taken from the answer's
    /// headers before the body is read; a body longer than the headers said is refused.
    fn get_headed(&self, what: &'static str, key: &str, max: u64) -> Result<Bytes> {
        let path = self.path(key);
        self.runtime.block_on(async {
            let answer = self
                .store
                .get(&path)
                .await
                .map_err(|e| self.read_err(what, key, e))?;
            let size = answer.meta.size;
            if size > max {
                return Err(too_large(what, key, size, max));
            }
            let mut body = bytes::BytesMut::with_capacity(size as usize);
            let mut stream = answer.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.read_err(what, key, e))?;
                if (body.len() + chunk.len()) as u64 > size {
                    return Err(Error::corrupt(
                        what,
                        key,
                        format!("longer than the {size} bytes its answer announced"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            if (body.len() as u64) < size {
                return Err(short_read(what, key, body.len(), &(0..size)));
            }
            Ok(body.freeze())
        })
    }

    /// Writes `bytes` under `key` with `attributes` (a storage class): one conditional PUT, or
    /// parts for large objects.
    fn put_with(&self, key: &str, bytes: Bytes, attributes: Attributes) -> Result<()> {
        let path = self.path(key);
        let result = if bytes.len() >= MULTIPART_THRESHOLD {
            self.runtime
                .block_on(self.put_multipart(&path, bytes, attributes))
        } else {
            let payload = PutPayload::from(bytes);
            let options = PutOptions {
                mode: PutMode::Create,
                attributes,
                ..PutOptions::default()
            };
            self.runtime
                .block_on(self.store.put_opts(&path, payload, options))
                .map(|_| ())
        };
        match result {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.err("write", key, e)),
        }
    }
}

/// Whether `e` says the bucket itself is missing (see the module comment for why by text).
fn is_missing_bucket(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotFound { .. } | object_store::Error::Generic { .. }
    ) && e.to_string().contains("NoSuchBucket")
}

impl Backend for ObjectBackend {
    /// Every request is a round trip to the store and is billed: reads are planned.
    fn read_cost(&self) -> ReadCost {
        ReadCost::REMOTE
    }

    /// Written with `PutMode::Create`. Large objects go in parts; a multipart upload cannot be
    /// conditional, which is harmless here since a second upload of the same name holds the
    /// same bytes.
    fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_with(key, bytes, Attributes::new())
    }

    /// In the configured storage class for data, if any.
    fn put_data_pack(&self, key: &str, bytes: Bytes) -> Result<()> {
        let mut attributes = Attributes::new();
        if let Some(class) = &self.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        self.put_with(key, bytes, attributes)
    }

    fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        let result = self
            .runtime
            .block_on(async { self.store.get(&path).await?.bytes().await });
        result.map_err(|e| self.read_err(what, key, e))
    }

    /// With a size from the caller's listing, only that many bytes are asked for (a ranged
    /// GET), so an object that grew meanwhile cannot make the read larger (its hash no longer
    /// matches its name). Without one, one plain GET: its answer's headers give the size, an
    /// object above `max` is refused before its body is read (the connection is dropped), and
    /// the body is read only up to that size. One round trip either way, not a HEAD first.
    fn get_bounded(
        &self,
        what: &'static str,
        key: &str,
        max: u64,
        known_size: Option<u64>,
    ) -> Result<Bytes> {
        let Some(size) = known_size else {
            return self.get_headed(what, key, max);
        };
        if size > max {
            return Err(too_large(what, key, size, max));
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        self.get_range(what, key, 0..size)
    }

    fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key);
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&path, range.clone()))
            .map_err(|e| self.read_err(what, key, e))?;
        if bytes.len() as u64 != range.end.saturating_sub(range.start) {
            return Err(short_read(what, key, bytes.len(), &range));
        }
        Ok(bytes)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = self.path(dir);
        let strip = if self.root.is_empty() {
            String::new()
        } else {
            format!("{}/", self.root)
        };
        self.runtime.block_on(async {
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
                out.push(ObjectInfo {
                    key,
                    size: meta.size,
                    modified,
                });
            }
            Ok(out)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_normalised_and_keys_go_below_it() {
        let open = |rest: &str| {
            let options = [("endpoint".to_string(), "http://127.0.0.1:9".to_string())];
            ObjectBackend::open(StoreKind::S3, rest, &options, Arc::default(), "s3://x").unwrap()
        };
        let s = open("bucket/some//prefix/");
        assert_eq!(s.prefix(), "some/prefix");
        assert_eq!(s.path("config").as_ref(), "some/prefix/config");
        let s = open("bucket");
        assert_eq!(s.prefix(), "");
        assert_eq!(s.path("data/ab/x").as_ref(), "data/ab/x");
        assert!(ObjectBackend::open(StoreKind::Local, "b", &[], Arc::default(), "x").is_err());
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
