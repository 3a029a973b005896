//! `coffer restore`: a snapshot into a directory, or a configured backup's sources back where
//! they came from (files to their paths, the database through pg_restore, row counts checked).

use super::Context_;
use crate::output;
use anyhow::{Context, Result};
use coffer_repo::ops::restore::{self as op, RestoreOptions};
use coffer_repo::snapshot::{self, SourceRecord};
use coffer_repo::sources::postgres::{DumpFormat, PgSource};
use coffer_repo::sources::restore::{restore_database, DatabaseReport};
use coffer_repo::{Repository, Snapshot};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer restore latest --target /tmp/r           (the whole snapshot below /tmp/r)
  coffer restore latest                           (a configured backup: every source back in place)
  coffer restore 3fa2 --only db --pg-target app_restored
  coffer restore latest --dry-run

A database that already has tables is replaced only with --force, or after typing its name at
the prompt. After a database restore the row counts are compared with the snapshot's; a
mismatch exits 1.")]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Directory to restore into (created if missing). For a snapshot of named sources,
    /// files go below it at their original paths instead of to those paths.
    #[arg(long, short = 't', value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Restore only this snapshot path and what is below it (repeatable)
    #[arg(long, value_name = "PATH", conflicts_with = "only")]
    pub include: Vec<String>,
    /// Replace existing files (without it, an existing file stops the restore before anything is written)
    #[arg(long)]
    pub overwrite: bool,
    /// Restore only this named source (repeatable)
    #[arg(long, value_name = "SOURCE")]
    pub only: Vec<String>,
    /// Restore the database into this database instead of the configured one (created if missing)
    #[arg(long, value_name = "DATABASE")]
    pub pg_target: Option<String>,
    /// Replace the contents of a database that already has tables
    #[arg(long)]
    pub force: bool,
    /// Say what would be restored where, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = snapshot::load_all(repo.storage(), repo.keys())?;
    let (id, snap) = snapshot::resolve(&all, &args.snapshot)?;
    if !snap.sources.is_empty() && args.include.is_empty() {
        return restore_sources(ctx, &repo, &id.short(), snap, &args);
    }
    if !args.only.is_empty() {
        return Err(crate::exit::usage(format!(
            "snapshot {} has no named sources; --only needs a snapshot made from a config",
            id.short()
        )));
    }
    let target = args.target.clone().ok_or_else(|| {
        crate::exit::usage(format!(
            "snapshot {} has no named sources: give --target DIR to restore it into",
            id.short()
        ))
    })?;
    if args.dry_run {
        outln!(
            "would restore snapshot {} into {}",
            id.short(),
            target.display()
        );
        return Ok(crate::exit::OK);
    }
    let options = RestoreOptions {
        target: target.clone(),
        includes: args.include.clone(),
        overwrite: args.overwrite,
    };
    let report = op::restore(&repo, snap, &options, &ctx.cancel)
        .with_context(|| format!("restoring snapshot {}", id.short()))?;
    if !ctx.global.quiet {
        outln!(
            "restored snapshot {} into {}: {} files, {} dirs, {} symlinks, {}",
            id.short(),
            target.display(),
            report.files,
            report.dirs,
            report.symlinks,
            output::bytes(report.bytes)
        );
    }
    Ok(crate::exit::OK)
}

/// The connection for a recorded postgres source: the config's source of the same name, else
/// libpq's environment with the recorded database.
pub fn pg_for(ctx: &Context_, record: &SourceRecord) -> Result<PgSource> {
    let configured = ctx
        .config
        .as_ref()
        .and_then(|l| l.config.sources.get(&record.name));
    if let Some(crate::config::SourceConfig::Postgres(p)) = configured {
        return crate::config::pg_source(&record.name, p);
    }
    let recorded = record
        .postgres
        .as_ref()
        .with_context(|| format!("source {} has no postgres record", record.name))?;
    Ok(PgSource {
        database: recorded.database.clone(),
        url: None,
        command_prefix: Vec::new(),
        dump_args: Vec::new(),
        format: DumpFormat::parse(&recorded.format).unwrap_or(DumpFormat::Custom),
    })
}

/// Where a path source goes: its origin, or below `target` at its origin's path.
fn destination(record: &SourceRecord, target: Option<&Path>) -> PathBuf {
    let origin = PathBuf::from(record.origin.as_deref().unwrap_or(&record.tree_path));
    match target {
        Some(t) => t.join(origin.strip_prefix("/").unwrap_or(&origin)),
        None => origin,
    }
}

fn selected<'a>(snap: &'a Snapshot, only: &[String]) -> Result<Vec<&'a SourceRecord>> {
    for name in only {
        if !snap.sources.iter().any(|s| &s.name == name) {
            let names: Vec<&str> = snap.sources.iter().map(|s| s.name.as_str()).collect();
            return Err(crate::exit::usage(format!(
                "the snapshot has no source {name:?}; it has: {}",
                names.join(", ")
            )));
        }
    }
    Ok(snap
        .sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect())
}

fn print_database(report: &DatabaseReport) -> anyhow::Result<()> {
    outln!(
        "  database {} {}: {} restored, {} tables",
        report.database,
        if report.created {
            "(created)"
        } else {
            "(replaced)"
        },
        output::bytes(report.bytes),
        report.tables.len()
    );
    for t in &report.tables {
        let show = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        outln!(
            "    {:<40} {:>12} {:>12}  {}",
            format!("{}.{}", t.schema, t.table),
            show(t.expected),
            show(t.actual),
            if t.matches() { "ok" } else { "MISMATCH" }
        );
    }
    Ok(())
}

fn restore_sources(
    ctx: &Context_,
    repo: &Repository,
    short: &str,
    snap: &Snapshot,
    args: &Args,
) -> Result<u8> {
    let records = selected(snap, &args.only)?;
    let databases = records.iter().filter(|r| r.kind == "postgres").count();
    if args.pg_target.is_some() && databases > 1 {
        return Err(crate::exit::usage(
            "--pg-target with several database sources: pick one with --only",
        ));
    }
    let target = args.target.as_deref();
    if !args.dry_run {
        preflight(ctx, repo, snap, &records, args)?;
    }
    let mut mismatched = Vec::new();
    let mut reports = Vec::new();
    for record in records {
        match record.kind.as_str() {
            "path" => {
                let dest = destination(record, target);
                if args.dry_run {
                    outln!(
                        "would restore source {} ({}) to {}{}",
                        record.name,
                        record.tree_path,
                        dest.display(),
                        if dest.exists() {
                            if args.overwrite {
                                " (exists: files would be replaced)"
                            } else {
                                " (exists: refused unless no file conflicts, or --overwrite)"
                            }
                        } else {
                            ""
                        }
                    );
                    continue;
                }
                let report = op::restore_subtree(
                    repo,
                    snap,
                    &record.tree_path,
                    &dest,
                    args.overwrite,
                    &ctx.cancel,
                )
                .with_context(|| format!("restoring source {}", record.name))?;
                if !ctx.global.quiet && !args.json {
                    outln!(
                        "restored source {} to {}: {} files, {} dirs, {}",
                        record.name,
                        dest.display(),
                        report.files,
                        report.dirs,
                        output::bytes(report.bytes)
                    );
                }
                reports.push(serde_json::json!({
                    "source": record.name, "kind": "path", "destination": dest, "report": report,
                }));
            }
            "postgres" => {
                let pg = pg_for(ctx, record)?;
                let database = args
                    .pg_target
                    .clone()
                    .unwrap_or_else(|| pg.database.clone());
                if args.dry_run {
                    let state = if pg.database_exists(&database)? {
                        let n = pg.table_count(&database)?;
                        if n == 0 {
                            "exists and is empty".to_string()
                        } else if args.force {
                            format!("has {n} tables: its contents would be replaced (--force)")
                        } else {
                            format!("has {n} tables: refused without --force or confirmation")
                        }
                    } else {
                        "would be created".to_string()
                    };
                    outln!(
                        "would restore source {} ({}) into database {database}: {state}",
                        record.name,
                        record.tree_path
                    );
                    continue;
                }
                // Approved (or empty) in the preflight.
                let mut allow = |_: &str, _: u64| true;
                let report = restore_database(repo, snap, record, &pg, &database, &mut allow)
                    .with_context(|| format!("restoring source {}", record.name))?;
                if !ctx.global.quiet && !args.json {
                    outln!("restored source {}:", record.name);
                    print_database(&report)?;
                }
                for m in report.mismatches() {
                    mismatched.push(format!("{}: {m}", record.name));
                }
                reports.push(serde_json::json!({
                    "source": record.name, "kind": "postgres", "report": report,
                }));
            }
            other => {
                let Some(t) = target else {
                    outln!(
                        "skipped source {} ({other}): give --target DIR to restore its file, \
                         or `coffer dump {short} {}`",
                        record.name,
                        record.tree_path
                    );
                    continue;
                };
                let dest = t.join(record.tree_path.trim_start_matches('/'));
                if args.dry_run {
                    outln!("would restore source {} to {}", record.name, dest.display());
                    continue;
                }
                let report = op::restore_subtree(
                    repo,
                    snap,
                    &record.tree_path,
                    &dest,
                    args.overwrite,
                    &ctx.cancel,
                )
                .with_context(|| format!("restoring source {}", record.name))?;
                if !ctx.global.quiet && !args.json {
                    outln!("restored source {} to {}", record.name, dest.display());
                }
                reports.push(serde_json::json!({
                    "source": record.name, "kind": other, "destination": dest, "report": report,
                }));
            }
        }
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "snapshot": short, "sources": reports, "mismatches": mismatched,
            }))?
        );
    }
    if !mismatched.is_empty() {
        for m in &mismatched {
            eprintln!("mismatch: {m}");
        }
        anyhow::bail!(
            "the restored data does not match snapshot {short} ({} mismatches)",
            mismatched.len()
        );
    }
    Ok(crate::exit::OK)
}

/// Everything that would refuse the restore is found before anything is changed: a file
/// conflict without --overwrite, a database with tables without --force or confirmation.
fn preflight(
    ctx: &Context_,
    repo: &Repository,
    snap: &Snapshot,
    records: &[&SourceRecord],
    args: &Args,
) -> Result<()> {
    let target = args.target.as_deref();
    for record in records {
        match record.kind.as_str() {
            "postgres" => {
                let pg = pg_for(ctx, record)?;
                let database = args
                    .pg_target
                    .clone()
                    .unwrap_or_else(|| pg.database.clone());
                if !pg.database_exists(&database)? {
                    continue;
                }
                let tables = pg.table_count(&database)?;
                if tables > 0 && !args.force && !confirm_by_typing(&database, tables) {
                    anyhow::bail!(
                        "source {}: database {database} already has {tables} tables; refusing to \
                         restore into it (pass --force to replace its contents, or --pg-target \
                         to restore elsewhere); nothing was changed",
                        record.name
                    );
                }
            }
            "path" => {
                let dest = destination(record, target);
                op::check_subtree(repo, snap, &record.tree_path, &dest, args.overwrite)
                    .with_context(|| format!("source {}: nothing was changed", record.name))?;
            }
            _ => {
                if let Some(t) = target {
                    let dest = t.join(record.tree_path.trim_start_matches('/'));
                    op::check_subtree(repo, snap, &record.tree_path, &dest, args.overwrite)
                        .with_context(|| format!("source {}: nothing was changed", record.name))?;
                }
            }
        }
    }
    Ok(())
}

/// At a terminal: the user must type the database's name to replace it (as the TMA Cloud
/// restore script asks). Elsewhere: no.
fn confirm_by_typing(database: &str, tables: u64) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!(
        "database {database} already has {tables} tables; its contents will be replaced.\n\
         type the database name to continue: "
    );
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    line.trim() == database
}
