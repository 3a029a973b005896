//! `coffer drill`: the restore test as one cron line. Restores a snapshot's sources into a
//! scratch database and a temporary directory, checks every restored file against the stored
//! chunk ids and every table's row count against the snapshot's, reports, and cleans up.
//! The drill itself is `coffer_repo::ops::drill`; this front end prints and picks the exit code.

use super::Context_;
use anyhow::Result;
use coffer_repo::ops::drill::{self as op, DrillOptions, DrillServer, VERIFIED_LABEL};
use std::path::PathBuf;

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
    /// Drill the databases on the server whose PostgreSQL URL is in this environment variable
    /// (overrides url-env in the config's drill section)
    #[arg(long, value_name = "VAR")]
    pub pg_url_env: Option<String>,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    let (id, snap) = all.resolve(&args.snapshot)?;
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
        if let Some(new_id) = &report.recorded_as {
            outln!(
                "recorded: label {VERIFIED_LABEL} on the snapshot (now {})",
                new_id.get(..8).unwrap_or(new_id)
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
