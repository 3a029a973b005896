//! `coffer restore`: a snapshot into a directory, or a configured backup's sources back where
//! they came from (files to their paths, the database through pg_restore, row counts checked).
//! The decisions and the work are `coffer_repo::ops::restore_sources`; this front end adds the
//! connections from the config, the typed confirmation at a terminal, the printed lines and the
//! exit codes.

use super::Context_;
use crate::escape::{name, path as shown};
use crate::output;
use anyhow::{Context, Result};
use coffer_repo::format::snapshot::SourceRecord;
use coffer_repo::ops::restore::{self as op, RestoreOptions};
use coffer_repo::ops::restore_sources::{
    self as sources_op, DatabaseState, Failure, Intended, Progress, Restored, SourcesOptions,
};
use coffer_repo::sources::postgres::{DumpFormat, PgSource, RoleOptions};
use coffer_repo::sources::restore::DatabaseReport;
use coffer_repo::{Repository, Snapshot, SnapshotId};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer restore latest --target /tmp/r           (the whole snapshot below /tmp/r)
  coffer restore latest                           (a configured backup: every source back in place)
  coffer restore 3fa2 --only db --pg-target app_restored
  coffer restore latest --dry-run
  coffer restore latest --only db --create-roles --owner app   (new host: docs/disaster-recovery.md)
  DB_URL=postgres://admin@10.0.0.5/app coffer restore latest --only db --pg-url-env DB_URL

A database that already has tables is replaced only with --force, or after typing its name at
the prompt: the snapshot is restored into a fresh database, its row counts checked, and only
then is it renamed into the old one's place (other connections terminated, after --wait
SECONDS). If anything fails before that, the old database is untouched. After a database
restore the row counts are compared with the snapshot's; a mismatch exits 1.

The roles the dump needs (recorded at backup) are checked first: if the server lacks any, the
restore is refused before anything changes, naming them (exit 16), unless --create-roles,
--owner ROLE / --no-owner (owners) or --no-acl (roles in GRANTs) make them unnecessary.")]
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
    /// Restore every file whose data is intact and list those with damaged or missing data
    /// (exit 1), instead of stopping at the first (file restores: snapshots without named
    /// sources, or with --include)
    #[arg(long)]
    pub skip_damaged: bool,
    /// Do not set extended attributes, ACLs or file capabilities
    #[arg(long)]
    pub no_xattrs: bool,
    /// Restore only this named source (repeatable)
    #[arg(long, value_name = "SOURCE")]
    pub only: Vec<String>,
    /// Restore the database into this database instead of the configured one (created if missing)
    #[arg(long, value_name = "DATABASE")]
    pub pg_target: Option<String>,
    /// Replace a database that already has tables: the snapshot is restored into a fresh
    /// database, which is renamed into its place only when complete (other connections to it
    /// are terminated then)
    #[arg(long)]
    pub force: bool,
    /// With --force: wait up to this long for other connections to the replaced database to
    /// end before terminating them
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
    /// Create the roles the dump needs that the server lacks, from the definitions recorded
    /// in the snapshot (without passwords unless the backup recorded them)
    #[arg(long)]
    pub create_roles: bool,
    /// Make ROLE own every restored object and the database (the app's user on a new host);
    /// the dump's own owner roles are then not needed
    #[arg(long, value_name = "ROLE", conflicts_with = "no_owner")]
    pub owner: Option<String>,
    /// Leave every restored object owned by the restoring role (pg_restore --no-owner)
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE; pg_restore --no-acl): the roles in them are
    /// then not needed
    #[arg(long)]
    pub no_acl: bool,
    /// Restore the database through the PostgreSQL URL in this environment variable (another
    /// server) instead of the config's connection; its database, if it names one, is the target
    #[arg(long, value_name = "VAR")]
    pub pg_url_env: Option<String>,
    /// Say what would be restored where, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    let (id, snap) = all.resolve(&args.snapshot)?;
    // [hooks]: before-restore once the snapshot is known, after-restore once it started; a
    // dry run changes nothing and runs none.
    if args.dry_run {
        return restore_resolved(ctx, &repo, id, snap, &args);
    }
    let mut hooks = crate::hooks::Hooks::new(ctx, "restore");
    hooks.set("COFFER_SNAPSHOT_ID", id.to_hex());
    let sources: Vec<&str> = if args.only.is_empty() {
        snap.sources.iter().map(|r| r.name.as_str()).collect()
    } else {
        args.only.iter().map(String::as_str).collect()
    };
    hooks.set("COFFER_SOURCES", sources.join(" "));
    let target = args.target.as_ref().map(|t| t.display().to_string());
    hooks.set("COFFER_RESTORE_TARGET", target.unwrap_or_default());
    hooks.before()?;
    let outcome = restore_resolved(ctx, &repo, id, snap, &args);
    hooks.after(outcome)
}

/// The restore of snapshot `id`, resolved.
fn restore_resolved(
    ctx: &Context_,
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    args: &Args,
) -> Result<u8> {
    if !snap.sources.is_empty() && args.include.is_empty() {
        return restore_sources(ctx, repo, *id, snap, args);
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
            shown(&target)
        );
        return Ok(crate::exit::OK);
    }
    let options = RestoreOptions {
        target: target.clone(),
        includes: args.include.clone(),
        overwrite: args.overwrite,
        skip_damaged: args.skip_damaged,
        no_xattrs: args.no_xattrs,
        progress: Default::default(),
    };
    options.progress.set_current(&target.to_string_lossy());
    let display = crate::progress::start(ctx, args.json, "restore", options.progress.clone())?;
    let report = op::restore(repo, snap, &options, &ctx.cancel);
    display.finish();
    let report = report.with_context(|| format!("restoring snapshot {}", id.short()))?;
    for w in &report.warnings {
        eprintln!("warning: {}", crate::escape::message(&w.to_string()));
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("snapshot_id".into(), id.to_hex().into());
            map.insert(
                "target".into(),
                target.to_string_lossy().into_owned().into(),
            );
        }
        outln!("{}", crate::progress::summary_line(value));
    } else if !ctx.global.quiet {
        if report.leftovers_removed > 0 {
            outln!("{}", leftovers_line(report.leftovers_removed));
        }
        outln!(
            "restored snapshot {} into {}: {} files, {} dirs, {} symlinks, {}",
            id.short(),
            shown(&target),
            report.files,
            report.dirs,
            report.symlinks,
            output::bytes(report.bytes)
        );
        if report.hard_links > 0 {
            outln!(
                "  linked  {} hard links to files restored",
                report.hard_links
            );
        }
        if report.special_files > 0 {
            outln!("  special {} FIFOs and device nodes", report.special_files);
        }
    }
    let left_out = report.warnings.iter().filter(|w| !w.restored).count();
    let lacking = report.warnings.len() - left_out;
    if lacking > 0 {
        eprintln!(
            "warning: {lacking} entries were restored without some of their extended \
             attributes (listed above: the restoring user or the file system cannot set them)"
        );
    }
    if left_out > 0 {
        eprintln!(
            "warning: {left_out} entries of the snapshot could not be restored (listed above); \
             everything else was"
        );
        return Ok(crate::exit::PARTIAL);
    }
    if report.damaged.is_empty() {
        return Ok(crate::exit::OK);
    }
    for d in &report.damaged {
        eprintln!(
            "damaged: {}: {}",
            crate::escape::message(&d.path.display().to_string()),
            crate::escape::message(&d.reason)
        );
    }
    eprintln!(
        "error: {} file(s) were not restored because their data in the repository is damaged \
         or missing (listed above); every other file was restored. `coffer check --read-data` \
         says what else is affected.",
        report.damaged.len()
    );
    Ok(crate::exit::ERROR)
}

/// The line saying how many temporary files of an interrupted earlier restore were removed.
fn leftovers_line(removed: u64) -> String {
    format!(
        "removed {removed} leftover temporary file{} (.NAME.coffer-tmp-PID-*) of an interrupted earlier restore",
        if removed == 1 { "" } else { "s" }
    )
}

/// The connection for a recorded postgres source: the config's source of the same name, else
/// libpq's environment with the recorded database. With `url_env` (`--pg-url-env VAR`), the URL
/// in that variable replaces the connection, and its database (if it names one) the database.
fn pg_for(ctx: &Context_, record: &SourceRecord, url_env: Option<&str>) -> Result<PgSource> {
    let configured = ctx
        .config
        .as_ref()
        .and_then(|l| l.config.sources.get(&record.name));
    let mut pg = match configured {
        Some(crate::config::SourceConfig::Postgres(p)) => {
            crate::config::pg_source(&record.name, p)?
        }
        _ => sources_op::recorded_connection(record)?,
    };
    if let Some(var) = url_env {
        let url = crate::config::url_from_env(var)?;
        if let Some(db) = url.database() {
            pg.database = db.to_string();
        }
        pg.url = Some(url);
    }
    Ok(pg)
}

/// [`pg_for`] as the library's callers want it: its error (with its causes) as the message of
/// a repository error.
pub fn connect(
    ctx: &Context_,
    record: &SourceRecord,
    url_env: Option<&str>,
) -> coffer_repo::Result<PgSource> {
    pg_for(ctx, record, url_env).map_err(|e| coffer_repo::Error::InvalidInput(format!("{e:#}")))
}

/// A failure of the library's restore, as the error this command reports: what was being
/// done, in front of the error and its causes.
fn failed(failure: Failure) -> anyhow::Error {
    let error = anyhow::Error::from(failure.error);
    match failure.doing {
        Some(doing) => error.context(doing),
        None => error,
    }
}

fn print_database(report: &DatabaseReport) -> coffer_repo::Result<()> {
    let how = if report.created {
        "(created)"
    } else if report.replaced {
        "(replaced by a fresh database)"
    } else {
        "(was empty)"
    };
    outln!(
        "  database {} {how}: {} restored, {} tables",
        name(&report.database),
        output::bytes(report.bytes),
        report.tables.len()
    );
    for session in &report.closed_connections {
        outln!(
            "  terminated connection to the replaced database: {}",
            crate::escape::message(&session.to_string())
        );
    }
    if let Some(kept) = &report.old_kept_as {
        outln!(
            "  the replaced database could not be dropped; it is kept as {} (drop it when no longer needed)",
            name(kept)
        );
    }
    for t in &report.tables {
        let show = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        outln!(
            "    {:<40} {:>12} {:>12}  {}",
            format!("{}.{}", name(&t.schema), name(&t.table)),
            show(t.expected),
            show(t.actual),
            if t.matches() { "ok" } else { "MISMATCH" }
        );
    }
    Ok(())
}

/// The terminal's side of a restore of named sources: connections from the config, the typed
/// confirmation, and the lines printed per source.
struct Front<'a> {
    ctx: &'a Context_,
    args: &'a Args,
    short: &'a str,
    /// What the progress display reads while files are written.
    counters: std::sync::Arc<coffer_repo::ops::progress::Progress>,
}

impl sources_op::Caller for Front<'_> {
    fn connect(&mut self, record: &SourceRecord) -> coffer_repo::Result<PgSource> {
        connect(self.ctx, record, self.args.pg_url_env.as_deref())
    }

    fn confirm_replace(&mut self, database: &str, tables: u64) -> bool {
        confirm_by_typing(database, tables)
    }

    fn counters(&self) -> Option<&coffer_repo::ops::progress::Progress> {
        Some(&self.counters)
    }

    fn progress(&mut self, event: Progress<'_>) -> coffer_repo::Result<()> {
        let args = self.args;
        match event {
            Progress::Skipped { record } => outln!(
                "skipped source {} ({}): give --target DIR to restore its file, \
                 or `coffer dump {} {}`",
                name(&record.name),
                name(&record.kind),
                self.short,
                name(&record.tree_path)
            ),
            Progress::Would {
                record,
                intended:
                    Intended::Files {
                        destination,
                        exists,
                    },
            } => {
                if record.kind == "path" {
                    outln!(
                        "would restore source {} ({}) to {}{}",
                        name(&record.name),
                        name(&record.tree_path),
                        shown(destination),
                        if *exists {
                            if args.overwrite {
                                " (exists: files would be replaced)"
                            } else {
                                " (exists: refused unless no file conflicts, or --overwrite)"
                            }
                        } else {
                            ""
                        }
                    );
                } else {
                    outln!(
                        "would restore source {} to {}",
                        name(&record.name),
                        shown(destination)
                    );
                }
            }
            Progress::Would {
                record,
                intended:
                    Intended::Database {
                        database,
                        state,
                        missing_roles,
                    },
            } => {
                let state = match state {
                    DatabaseState::Missing => "would be created".to_string(),
                    DatabaseState::Empty => "exists and is empty".to_string(),
                    DatabaseState::Tables(n) if args.force => format!(
                        "has {n} tables: it would be replaced by a fresh database restored \
                         beside it (--force; other connections terminated{})",
                        if args.wait > 0 {
                            format!(" after waiting up to {} s", args.wait)
                        } else {
                            String::new()
                        }
                    ),
                    DatabaseState::Tables(n) => {
                        format!("has {n} tables: refused without --force or confirmation")
                    }
                };
                outln!(
                    "would restore source {} ({}) into database {}: {state}",
                    name(&record.name),
                    name(&record.tree_path),
                    name(database)
                );
                if !missing_roles.is_empty() {
                    outln!(
                        "  the server lacks the role(s) {} that the dump needs: {}",
                        crate::escape::names(missing_roles, ", "),
                        if args.create_roles {
                            "they would be created from the snapshot's definitions (--create-roles)"
                        } else {
                            "refused without --create-roles (or --owner/--no-owner, --no-acl)"
                        }
                    );
                }
            }
            Progress::Restored(restored) => {
                if let Restored::Files(report) = &restored.report {
                    for w in &report.warnings {
                        eprintln!("warning: {}", crate::escape::message(&w.to_string()));
                    }
                }
                if self.ctx.global.quiet || args.json {
                    return Ok(());
                }
                let destination = restored.destination.as_deref().unwrap_or(Path::new(""));
                match &restored.report {
                    Restored::Files(report) if restored.kind == "path" => {
                        if report.leftovers_removed > 0 {
                            outln!("{}", leftovers_line(report.leftovers_removed));
                        }
                        outln!(
                            "restored source {} to {}: {} files, {} dirs, {}",
                            name(&restored.source),
                            shown(destination),
                            report.files,
                            report.dirs,
                            output::bytes(report.bytes)
                        )
                    }
                    Restored::Files(_) => outln!(
                        "restored source {} to {}",
                        name(&restored.source),
                        shown(destination)
                    ),
                    Restored::Database(report) => {
                        outln!("restored source {}:", name(&restored.source));
                        print_database(report)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn restore_sources(
    ctx: &Context_,
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    args: &Args,
) -> Result<u8> {
    let options = SourcesOptions {
        only: args.only.clone(),
        target: args.target.clone(),
        pg_target: args.pg_target.clone(),
        overwrite: args.overwrite,
        force: args.force,
        wait: std::time::Duration::from_secs(args.wait),
        roles: RoleOptions {
            create_roles: args.create_roles,
            owner: args.owner.clone(),
            no_owner: args.no_owner,
            no_acl: args.no_acl,
        },
    };
    let plan =
        sources_op::plan(id, snap, &options).map_err(|e| crate::exit::usage(e.to_string()))?;
    // Owner and privilege options a database source cannot honour are usage errors.
    for planned in &plan.sources {
        if let Some(pg) = &planned.record.postgres {
            let format = DumpFormat::parse(&pg.format).unwrap_or(DumpFormat::Custom);
            options
                .roles
                .validate(format, &planned.record.name)
                .map_err(|e| crate::exit::usage(e.to_string()))?;
        }
    }
    let short = id.short();
    let counters = std::sync::Arc::new(coffer_repo::ops::progress::Progress::new());
    let mut front = Front {
        ctx,
        args,
        short: &short,
        counters: counters.clone(),
    };
    if args.dry_run {
        sources_op::dry_run(&plan, &mut front).map_err(failed)?;
        return Ok(crate::exit::OK);
    }
    let display = crate::progress::start(ctx, args.json, "restore", counters)?;
    let report = sources_op::restore(repo, &plan, &mut front, &ctx.cancel);
    display.finish();
    let report = report.map_err(failed)?;
    if args.json {
        // Through a JSON value, whose keys are sorted: the order this output always had.
        outln!(
            "{}",
            crate::progress::summary_line(serde_json::to_value(&report)?)
        );
    }
    if !report.mismatches.is_empty() {
        for m in &report.mismatches {
            eprintln!("mismatch: {}", crate::escape::message(&m.to_string()));
        }
        anyhow::bail!(
            "the restored data does not match snapshot {short} ({} mismatches)",
            report.mismatches.len()
        );
    }
    Ok(crate::exit::OK)
}

/// At a terminal: the user must type the database's name to replace it (as the TMA Cloud
/// restore script asks). Elsewhere: no.
fn confirm_by_typing(database: &str, tables: u64) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!(
        "database {} already has {tables} tables; it will be replaced by the snapshot's.\n\
         type the database name to continue: ",
        name(database)
    );
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    line.trim() == database
}
