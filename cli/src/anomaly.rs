//! Anomaly warnings after a backup: a source (a dump especially) much smaller or much larger
//! than its recent history, or a database that used to have rows and now has far fewer. A
//! nightly dump that shrank by 97% because the app's tables were gone must not pass with exit
//! 0 and no word.
//!
//! The history of a source is the snapshots of the same host holding a source of that name
//! (for a backup without named sources: the same host and paths), newest first, at most
//! `history` of them. Thresholds come from `[anomaly]` in the configuration; the defaults flag
//! less than half or more than three times the median.

use coffer_repo::{Snapshot, SnapshotId};

pub use crate::config::Thresholds;

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

/// The warnings for `new` (not saved yet) against the snapshots in `all`.
pub fn detect(new: &Snapshot, all: &[(SnapshotId, Snapshot)], t: &Thresholds) -> Vec<String> {
    let mut earlier: Vec<&Snapshot> = all
        .iter()
        .filter(|(_, s)| s.hostname == new.hostname && s.time.timestamp() <= new.time.timestamp())
        .map(|(_, s)| s)
        .collect();
    earlier.sort_by_key(|s| std::cmp::Reverse(s.time.timestamp()));
    let mut warnings = Vec::new();
    if new.sources.is_empty() {
        let sizes: Vec<u64> = earlier
            .iter()
            .filter(|s| s.sources.is_empty() && s.paths == new.paths)
            .take(t.history)
            .map(|s| s.summary.total_bytes)
            .collect();
        let n = sizes.len();
        compare(
            "the backup",
            new.summary.total_bytes,
            median(sizes),
            n,
            t,
            &mut warnings,
        );
        return warnings;
    }
    for source in &new.sources {
        let history: Vec<&coffer_repo::format::snapshot::SourceRecord> = earlier
            .iter()
            .filter_map(|s| s.sources.iter().find(|r| r.name == source.name))
            .take(t.history)
            .collect();
        let label = format!("source {}", crate::escape::name(&source.name));
        if let Some(stream) = &source.stream {
            let sizes: Vec<u64> = history
                .iter()
                .filter_map(|r| r.stream.as_ref().map(|s| s.bytes))
                .collect();
            let n = sizes.len();
            compare(&label, stream.bytes, median(sizes), n, t, &mut warnings);
        }
        if let Some(pg) = &source.postgres {
            rows(&label, pg, &history, t, &mut warnings);
        }
    }
    warnings
}

/// A size against the median of `n` earlier ones.
fn compare(
    what: &str,
    now: u64,
    median: Option<u64>,
    n: usize,
    t: &Thresholds,
    out: &mut Vec<String>,
) {
    let Some(median) = median.filter(|m| *m > 0) else {
        return;
    };
    let ratio = now as f64 / median as f64;
    if ratio < t.smaller_than {
        out.push(format!(
            "anomaly: {what} is {}, {:.0}% smaller than the median {} of its last {n} snapshot(s)",
            crate::output::bytes(now),
            (1.0 - ratio) * 100.0,
            crate::output::bytes(median)
        ));
    } else if ratio > t.larger_than {
        out.push(format!(
            "anomaly: {what} is {}, {ratio:.1} times the median {} of its last {n} snapshot(s)",
            crate::output::bytes(now),
            crate::output::bytes(median)
        ));
    }
}

/// Row totals against the median, and tables of the previous dump that had rows and are gone.
fn rows(
    label: &str,
    pg: &coffer_repo::format::snapshot::PostgresRecord,
    history: &[&coffer_repo::format::snapshot::SourceRecord],
    t: &Thresholds,
    out: &mut Vec<String>,
) {
    let earlier: Vec<&coffer_repo::format::snapshot::PostgresRecord> =
        history.iter().filter_map(|r| r.postgres.as_ref()).collect();
    let total: u64 = pg.tables.iter().map(|t| t.rows).sum();
    let totals: Vec<u64> = earlier
        .iter()
        .map(|p| p.tables.iter().map(|t| t.rows).sum())
        .collect();
    let n = totals.len();
    if let Some(m) = median(totals).filter(|m| *m > 0) {
        if (total as f64) < m as f64 * t.smaller_than {
            out.push(format!(
                "anomaly: {label} has {total} rows in all, against a median of {m} in its last {n} snapshot(s)"
            ));
        }
    }
    let Some(previous) = earlier.first() else {
        return;
    };
    let gone: Vec<String> = previous
        .tables
        .iter()
        .filter(|old| old.rows > 0)
        .filter(|old| {
            !pg.tables
                .iter()
                .any(|t| t.schema == old.schema && t.table == old.table && t.rows > 0)
        })
        .map(|old| {
            format!(
                "{}.{}",
                crate::escape::name(&old.schema),
                crate::escape::name(&old.table)
            )
        })
        .collect();
    if !gone.is_empty() {
        let shown: Vec<&str> = gone.iter().take(5).map(String::as_str).collect();
        out.push(format!(
            "anomaly: {label}: {} table(s) that had rows in the previous snapshot are empty or gone: {}{}",
            gone.len(),
            shown.join(", "),
            if gone.len() > 5 { ", …" } else { "" }
        ));
    }
}

/// Before a backup: the check the backup runs on its snapshot just before saving it, so that
/// the anomalies are recorded in the snapshot's summary. Loading the history costs one listing
/// and one read per snapshot; a failure to load it is a warning and no check, never an error.
pub fn check_for(
    ctx: &crate::commands::Context_,
    repo: &coffer_repo::Repository,
) -> Option<coffer_repo::ops::backup::AnomalyCheck> {
    let thresholds = ctx
        .config
        .as_ref()
        .and_then(|l| l.config.anomaly.clone())
        .unwrap_or_default();
    let all = match coffer_repo::Snapshot::load_all(repo.storage(), repo.keys()) {
        Ok(all) => all,
        Err(e) => {
            eprintln!(
                "warning: the snapshot history could not be read, so no anomaly check: {}",
                crate::escape::message(&e.to_string())
            );
            return None;
        }
    };
    Some(Box::new(move |new: &Snapshot| {
        detect(new, &all.good, &thresholds)
    }))
}

/// After a backup: the anomalies recorded in `report`'s snapshot, printed on stderr as
/// warnings (also with `-q`: they need a look) and added to the notification body.
pub fn after_backup(
    ctx: &crate::commands::Context_,
    report: &coffer_repo::ops::backup::BackupReport,
) -> Vec<String> {
    let found = report.snapshot.summary.anomalies.clone();
    for w in &found {
        eprintln!("warning: {w}");
    }
    ctx.report("anomalies", found.clone().into());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flag_shrinking_and_growing_sizes() {
        let t = Thresholds::default();
        let mut out = Vec::new();
        compare("source db", 273 * 1024, Some(9_700 * 1024), 7, &t, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("97% smaller"), "{out:?}");
        out.clear();
        compare("source db", 9_000, Some(10_000), 7, &t, &mut out);
        compare("source db", 25_000, Some(10_000), 7, &t, &mut out);
        compare("source db", 1, None, 0, &t, &mut out);
        assert!(out.is_empty(), "{out:?}");
        compare("source db", 40_000, Some(10_000), 7, &t, &mut out);
        assert!(out[0].contains("4.0 times"), "{out:?}");
        assert_eq!(median(vec![5, 1, 9]), Some(5));
        assert!(Thresholds {
            smaller_than: 1.5,
            ..t.clone()
        }
        .validate()
        .is_err());
        assert!(Thresholds {
            history: 0,
            ..t.clone()
        }
        .validate()
        .is_err());
        assert!(t.validate().is_ok());
    }
}
