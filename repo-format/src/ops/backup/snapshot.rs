//! Backup stage 5, snapshot assembly: the summary from the walk's counts and the writer's, the
//! source records (named path sources here, stream sources from their stage), and the document
//! itself. Pure: [`Assembly::snapshot`] builds the value, `backup` saves it after the index.

use super::plan::PathPlan;
use super::pool::Counts;
use super::BackupOptions;
use crate::format::id::{BlobId, SnapshotId};
use crate::format::snapshot::{Snapshot, SnapshotTime, SourceRecord, Summary};
use crate::repository::writer::BlobWriter;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the writer stored, read before `finish` consumes it.
pub(super) struct WriterTotals {
    data_blobs_new: u64,
    tree_blobs_new: u64,
    added_raw_bytes: u64,
    added_stored_bytes: u64,
}

impl WriterTotals {
    pub(super) fn take(writer: &BlobWriter<'_>) -> WriterTotals {
        let stats = &writer.stats;
        WriterTotals {
            data_blobs_new: stats.data_blobs_new.load(Ordering::Relaxed),
            tree_blobs_new: stats.tree_blobs_new.load(Ordering::Relaxed),
            added_raw_bytes: stats.added_raw.load(Ordering::Relaxed),
            added_stored_bytes: stats.added_stored.load(Ordering::Relaxed),
        }
    }
}

/// Everything a snapshot document is made of.
pub(super) struct Assembly<'a> {
    pub(super) opts: &'a BackupOptions,
    pub(super) time: &'a jiff::Zoned,
    pub(super) started: Instant,
    pub(super) root: BlobId,
    pub(super) tree_paths: &'a [PathBuf],
    pub(super) paths: &'a [PathPlan],
    /// Records of the named stream sources.
    pub(super) records: Vec<SourceRecord>,
    pub(super) counts: &'a Counts,
    /// How many warnings the walk gave (files left out or stored as they kept changing).
    pub(super) warnings: usize,
    pub(super) stats: WriterTotals,
    pub(super) packs_written: u64,
    pub(super) parent: Option<SnapshotId>,
    pub(super) key_id: String,
}

impl Assembly<'_> {
    /// The snapshot document.
    pub(super) fn snapshot(self) -> Snapshot {
        let counts = self.counts;
        let summary = Summary {
            files: counts.files,
            dirs: counts.dirs,
            symlinks: counts.symlinks,
            special_files: counts.special,
            total_bytes: counts.total_bytes,
            bytes_read: counts.bytes_read,
            files_unchanged: counts.files_unchanged,
            data_blobs_new: self.stats.data_blobs_new,
            tree_blobs_new: self.stats.tree_blobs_new,
            added_raw_bytes: self.stats.added_raw_bytes,
            added_stored_bytes: self.stats.added_stored_bytes,
            packs_written: self.packs_written,
            errors: self.warnings as u64,
            duration_seconds: self.started.elapsed().as_secs_f64(),
            anomalies: Vec::new(),
        };
        let opts = self.opts;
        Snapshot {
            time: SnapshotTime::from_zoned(self.time),
            tree: self.root,
            paths: self
                .tree_paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            hostname: opts.hostname.clone(),
            username: opts.username.clone(),
            tags: opts.tags.clone(),
            labels: opts.labels.clone(),
            parent: self.parent,
            excludes: opts.excludes.clone(),
            program_version: env!("CARGO_PKG_VERSION").to_string(),
            key_id: self.key_id,
            summary,
            sources: source_records(self.paths, self.records),
            original: None,
            copied_from: None,
        }
    }
}

/// The snapshot's `sources`: a record for each named path source, then the streams' records,
/// sorted by name.
fn source_records(paths: &[PathPlan], streams: Vec<SourceRecord>) -> Vec<SourceRecord> {
    let mut sources: Vec<SourceRecord> = paths
        .iter()
        .filter_map(|p| {
            let name = p.name.clone()?;
            let path = p.absolute.to_string_lossy().into_owned();
            Some(SourceRecord {
                name,
                kind: "path".into(),
                tree_path: path.clone(),
                origin: Some(path),
                stream: None,
                postgres: None,
            })
        })
        .chain(streams)
        .collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_path_sources_are_recorded_and_all_records_sorted_by_name() {
        let paths = [
            PathPlan {
                name: Some("uploads".into()),
                absolute: PathBuf::from("/srv/uploads"),
            },
            PathPlan {
                name: None,
                absolute: PathBuf::from("/etc/app"),
            },
        ];
        let stream = SourceRecord {
            name: "db".into(),
            kind: "postgres".into(),
            tree_path: "/db/app.dump".into(),
            origin: None,
            stream: None,
            postgres: None,
        };
        let records = source_records(&paths, vec![stream]);
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db", "uploads"]);
        assert_eq!(records[1].kind, "path");
        assert_eq!(records[1].origin.as_deref(), Some("/srv/uploads"));
        assert_eq!(records[1].tree_path, "/srv/uploads");
    }
}
