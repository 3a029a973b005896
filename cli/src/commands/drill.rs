//! `coffer drill`: the restore test as one cron line. Restores a snapshot's sources into a
//! scratch database and a temporary directory, checks every restored file against the stored
//! chunk ids and every table's row count against the snapshot's, reports, and cleans up.
//! The drill itself is `coffer_repo::ops::drill`; this front end prints and picks the exit code.
//! Every drill's result, passed or failed, is recorded as its own object; `--list` prints them.

use super::Context_;
use anyhow::Result;
use coffer_repo::ops::drill::{self as op, DrillOptions, DrillServer};
use coffer_repo::ops::drill_history as op_history;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer drill                   (the latest snapshot)
  coffer drill 3fa2 --json
  coffer drill --list            (every recorded drill, passed and failed)
  0 4 1 * *  coffer --config /etc/coffer/app.toml drill --json >> /var/log/coffer-drill.log

Exit code 0: everything restored and matched. 1: a source failed or did not match (named).
The result is recorded in the repository (drills/<id>) either way; the snapshot keeps its id.")]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest` (default); with --list, only its drills
    pub snapshot: Option<String>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Do not record the result in the repository
    #[arg(long, conflicts_with = "list")]
    pub no_record: bool,
    /// List the recorded drills, oldest first, instead of drilling
    #[arg(long)]
    pub list: bool,
    /// Parent of the temporary directory (default: the system's temporary directory)
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Drill the databases on the server whose PostgreSQL URL is in this environment variable
    /// (overrides url-env in the config's drill section)
    #[arg(long, value_name = "VAR")]
    pub pg_url_env: Option<String>,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    if args.list {
        return list(&repo, &all, &args);
    }
    let (id, snap) = all.resolve(args.snapshot.as_deref().unwrap_or("latest"))?;
    let short = id.short();
    let drill_config = ctx
        .config
        .as_ref()
        .and_then(|l| l.config.drill.clone())
        .unwrap_or_default();
    let url_env = args.pg_url_env.clone().or(drill_config.url_env.clone());
    let options = DrillOptions {
        scratch_parent: args.scratch_dir.clone(),
        record: !args.no_record,
        hostname: super::hostname(),
        server: DrillServer {
            database_prefix: drill_config.database_prefix.clone(),
            database: drill_config.database.clone(),
            owner: drill_config.role.clone(),
        },
    };
    let mut connect = |record: &_| super::restore::connect(ctx, record, url_env.as_deref());
    let report = op::drill(&repo, id, snap, &options, &mut connect, &ctx.cancel)?;
    let ok = report.ok;
    for problem in &report.stale_scratch_problems {
        eprintln!("warning: {}", crate::escape::message(problem));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if !(ok && ctx.global.quiet) {
        for path in &report.stale_scratch_removed {
            outln!(
                "removed the scratch directory {} of an earlier drill that died",
                crate::escape::name(path)
            );
        }
        outln!(
            "drill of snapshot {short} ({})",
            crate::escape::name(&snap.time)
        );
        for r in &report.sources {
            outln!(
                "  {:<4} {} ({}): {}",
                if r.ok { "ok" } else { "FAIL" },
                crate::escape::name(&r.source),
                crate::escape::name(&r.kind),
                crate::escape::message(&r.checked)
            );
            for p in &r.problems {
                outln!("         {}", crate::escape::message(p));
            }
            if let Some(db) = &r.database {
                for t in db.tables.iter().filter(|t| !t.matches()) {
                    outln!(
                        "         {}.{}: {:?} expected, {:?} restored",
                        crate::escape::name(&t.schema),
                        crate::escape::name(&t.table),
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
        if let Some(rto) = report.rto_seconds {
            outln!(
                "restore time (RTO) {rto:.1} s, drill {:.1} s",
                report.duration_seconds
            );
        }
        if let Some(result) = &report.recorded {
            outln!(
                "recorded as drill result {} (`coffer drill --list`)",
                result.get(..8).unwrap_or(result)
            );
        }
    }
    if ok {
        Ok(crate::exit::OK)
    } else {
        let failed = report.failed();
        eprintln!(
            "coffer: drill of snapshot {short} failed for source(s): {}",
            crate::escape::names(&failed, ", ")
        );
        Ok(crate::exit::ERROR)
    }
}

// ---- drill --list: the drill history (item 4 of issue 15) ----

/// `drill --list`: every recorded drill, oldest first; with a snapshot, only its drills.
fn list(
    repo: &coffer_repo::Repository,
    all: &coffer_repo::format::snapshot::Snapshots,
    args: &Args,
) -> Result<u8> {
    let history = super::load_drill_history(repo, &all.good)?;
    let only = match &args.snapshot {
        Some(spec) => Some(all.resolve(spec)?.0),
        None => None,
    };
    let entries: Vec<&op_history::Entry> = history
        .entries
        .iter()
        .filter(|e| only.is_none_or(|id| e.result.snapshot == id))
        .collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(crate::exit::OK);
    }
    if entries.is_empty() {
        outln!("no drills recorded (run `coffer drill`)");
        return Ok(crate::exit::OK);
    }
    outln!(
        "{:<19}  {:<12}  {:<18}  {:<7}  {:>8}  sources",
        "time",
        "drilled on",
        "snapshot",
        "verdict",
        "rto"
    );
    for e in entries {
        let r = &e.result;
        let snapshot = format!(
            "{}{}",
            r.snapshot.short(),
            if e.snapshot_present { "" } else { " (removed)" }
        );
        let verdict = if r.passed { "passed" } else { "FAILED" };
        let rto = r
            .rto_seconds
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_default();
        let sources = if e.legacy {
            "recorded as the label drill.verified by an older coffer".to_string()
        } else {
            r.sources
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        crate::escape::name(&s.name),
                        if s.passed { "ok" } else { "FAILED" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        outln!(
            "{:<19}  {:<12}  {:<18}  {:<7}  {:>8}  {}",
            crate::output::local_time(r.time.timestamp()),
            crate::escape::name(if e.legacy { "?" } else { &r.hostname }),
            snapshot,
            verdict,
            rto,
            sources
        );
        if let Some(error) = &r.error {
            outln!("{:<19}  error: {}", "", crate::escape::message(error));
        }
    }
    Ok(crate::exit::OK)
}
