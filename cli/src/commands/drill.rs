//! `coffer drill`: the restore test as one cron line. Restores a snapshot's sources into a
//! scratch database and a temporary directory, checks every restored file against the stored
//! chunk ids and every table's row count against the snapshot's, reports, and cleans up.

use super::Context_;
use crate::output;
use anyhow::Result;
use coffer_repo::ops::restore as op;
use coffer_repo::snapshot::{self, SourceRecord};
use coffer_repo::sources::restore::{restore_database, verify_restored};
use coffer_repo::{Repository, Snapshot};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer drill                   (the latest snapshot)
  coffer drill 3fa2 --json
  0 4 1 * *  coffer --config /etc/coffer/app.toml drill --json >> /var/log/coffer-drill.log

Exit code 0: everything restored and matched. 1: a source failed or did not match (named).")]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest` (default)
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Do not record a passed drill in the snapshot's labels
    #[arg(long)]
    pub no_record: bool,
    /// Parent of the temporary directory (default: the system's temporary directory)
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct SourceResult {
    source: String,
    kind: String,
    ok: bool,
    /// What was checked, in words.
    checked: String,
    problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<coffer_repo::sources::restore::DatabaseReport>,
}

#[derive(Serialize)]
struct Report {
    snapshot: String,
    time: String,
    ok: bool,
    /// After a passed drill: the id of the snapshot as relabelled with `drill.verified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_as: Option<String>,
    sources: Vec<SourceResult>,
}

/// A directory removed when dropped, whatever happened.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SourceResult {
    /// Not yet checked: failed until a check says otherwise.
    fn new(record: &SourceRecord) -> SourceResult {
        SourceResult {
            source: record.name.clone(),
            kind: record.kind.clone(),
            ok: false,
            checked: String::new(),
            problems: Vec::new(),
            database: None,
        }
    }
}

fn scratch_dir(parent: Option<&Path>) -> Result<ScratchDir> {
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = parent.join(format!("coffer-drill-{}-{nanos:08x}", std::process::id()));
    std::fs::create_dir(&dir)
        .map_err(|e| anyhow::anyhow!("creating the drill directory {}: {e}", dir.display()))?;
    Ok(ScratchDir(dir))
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = snapshot::load_all(repo.storage(), repo.keys())?;
    let (id, snap) = snapshot::resolve(&all, &args.snapshot)?;
    let short = id.short();
    let dir = scratch_dir(args.scratch_dir.as_deref())?;
    // A snapshot without named sources is drilled as one tree.
    let whole = SourceRecord {
        name: "snapshot".into(),
        kind: "path".into(),
        tree_path: "/".into(),
        origin: None,
        stream: None,
        postgres: None,
    };
    let records: Vec<&SourceRecord> = if snap.sources.is_empty() {
        vec![&whole]
    } else {
        snap.sources.iter().collect()
    };
    let mut results = Vec::new();
    for (i, record) in records.into_iter().enumerate() {
        if ctx.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(coffer_repo::Error::Interrupted.into());
        }
        let result = match record.kind.as_str() {
            "postgres" => drill_database(ctx, &repo, snap, record, &short, i),
            _ => drill_files(ctx, &repo, snap, record, &dir.0),
        };
        results.push(result);
    }
    drop(dir);
    let ok = results.iter().all(|r| r.ok);
    // A passed drill is recorded on the snapshot itself (snapshots are immutable objects, so
    // this writes a relabelled copy and removes the original; see docs/repository-format.md, section 10.2).
    let recorded_as = if ok && !args.no_record {
        let now = jiff::Timestamp::now().to_string();
        let labels = std::collections::BTreeMap::from([("drill.verified".to_string(), now)]);
        let new_id = snapshot::relabel(repo.storage(), repo.keys(), id, snap, &labels)?;
        Some(new_id.to_hex())
    } else {
        None
    };
    let report = Report {
        snapshot: id.to_hex(),
        time: snap.time.clone(),
        ok,
        recorded_as,
        sources: results,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("drill of snapshot {short} ({})", snap.time);
        for r in &report.sources {
            outln!(
                "  {:<4} {} ({}): {}",
                if r.ok { "ok" } else { "FAIL" },
                r.source,
                r.kind,
                r.checked
            );
            for p in &r.problems {
                outln!("         {p}");
            }
            if let Some(db) = &r.database {
                for t in db.tables.iter().filter(|t| !t.matches()) {
                    outln!(
                        "         {}.{}: {:?} expected, {:?} restored",
                        t.schema,
                        t.table,
                        t.expected,
                        t.actual
                    );
                }
            }
        }
        outln!(
            "{}",
            if ok {
                "drill passed: the snapshot restores and matches"
            } else {
                "drill FAILED"
            }
        );
        if let Some(new_id) = &report.recorded_as {
            outln!(
                "recorded: label drill.verified on the snapshot (now {})",
                new_id.get(..8).unwrap_or(new_id)
            );
        }
    }
    if ok {
        Ok(crate::exit::OK)
    } else {
        let failed: Vec<&str> = report
            .sources
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.source.as_str())
            .collect();
        eprintln!(
            "coffer: drill of snapshot {short} failed for source(s): {}",
            failed.join(", ")
        );
        Ok(crate::exit::ERROR)
    }
}

fn drill_files(
    ctx: &Context_,
    repo: &Repository,
    snap: &Snapshot,
    record: &SourceRecord,
    dir: &Path,
) -> SourceResult {
    let dest = dir.join(&record.name);
    let mut result = SourceResult::new(record);
    let restored = op::restore_subtree(repo, snap, &record.tree_path, &dest, false, &ctx.cancel);
    if let Err(e) = restored {
        result.checked = "restore failed".into();
        result.problems.push(format!("{e}"));
        return result;
    }
    match verify_restored(repo, snap, &record.tree_path, &dest) {
        Ok(check) => {
            result.checked = format!(
                "{} files, {} restored and verified chunk by chunk",
                check.files,
                output::bytes(check.bytes)
            );
            result.ok = check.mismatches.is_empty();
            result.problems = check.mismatches;
        }
        Err(e) => {
            result.checked = "verification failed".into();
            result.problems.push(format!("{e}"));
        }
    }
    result
}

fn drill_database(
    ctx: &Context_,
    repo: &Repository,
    snap: &Snapshot,
    record: &SourceRecord,
    short: &str,
    index: usize,
) -> SourceResult {
    let mut result = SourceResult::new(record);
    let pg = match super::restore::pg_for(ctx, record) {
        Ok(pg) => pg,
        Err(e) => {
            result.checked = "no connection".into();
            result.problems.push(format!("{e:#}"));
            return result;
        }
    };
    let scratch = format!("coffer_drill_{short}_{}_{index}", std::process::id());
    // A scratch database that already has tables is never touched.
    let mut refuse = |_: &str, _: u64| false;
    let restored = restore_database(repo, snap, record, &pg, &scratch, &mut refuse);
    let dropped = pg.drop_database(&scratch);
    match restored {
        Ok(report) => {
            let problems = report.mismatches();
            result.checked = format!(
                "{} restored into scratch database {scratch}, {} tables' row counts compared",
                output::bytes(report.bytes),
                report.tables.len()
            );
            result.ok = problems.is_empty();
            result.problems = problems;
            result.database = Some(report);
        }
        Err(e) => {
            result.checked = "restore failed".into();
            result.problems.push(format!("{e}"));
        }
    }
    if let Err(e) = dropped {
        result.problems.push(format!(
            "the scratch database {scratch} could not be dropped: {e}"
        ));
        result.ok = false;
    }
    result
}
