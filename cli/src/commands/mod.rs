//! One module per command; each has an `Args` struct and a `run`.

mod backup;
mod cat;
mod check;
mod completions;
mod copy;
mod diff;
mod drill;
mod dump;
mod forget;
mod init;
mod key;
mod ls;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
mod status;
mod unlock;

use crate::global::{Cli, GlobalArgs};
use anyhow::{Context, Result};
use clap::Subcommand;
use coffer_repo::{OpenMode, Repository, Storage};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

// Parsed once per run and matched at once: the size of `backup`'s many flags costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(init::Args),
    /// Back up files, directories, standard input or a command's output
    Backup(backup::Args),
    /// List snapshots
    Snapshots(snapshots::Args),
    /// List the files in a snapshot
    Ls(ls::Args),
    /// Restore a snapshot: into a directory, or its sources back where they came from
    Restore(restore::Args),
    /// Test a restore: latest snapshot into a scratch database and directory, verified
    Drill(drill::Args),
    /// Write one file of a snapshot to standard output
    Dump(dump::Args),
    /// Copy snapshots (and the data they need) from another repository into this one
    Copy(copy::Args),
    /// Print a repository object as JSON (for debugging)
    Cat(cat::Args),
    /// Manage the repository's passwords (key files)
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Remove snapshots according to a retention policy, saying why each is kept
    Forget(forget::Args),
    /// Remove data that no snapshot needs (never blocks backups)
    Prune(prune::Args),
    /// Verify the repository; exit 1 naming damaged snapshots and files
    Check(check::Args),
    /// Clear a maintenance lease left by a prune that is gone
    Unlock(unlock::Args),
    /// Is the backup fresh? Newest snapshot per host and source set; exit 1 if too old
    Status(status::Args),
    /// What changed between two snapshots: files added, removed, changed; table row counts
    Diff(diff::Args),
    /// Repository size, stored vs raw, deduplication, and the bytes each snapshot alone holds
    Stats(stats::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions(completions::CompletionsArgs),
    /// Print or write man pages
    Man(completions::ManArgs),
    /// Recover after data was lost: rebuild the index, rewrite damaged snapshots
    #[command(subcommand)]
    Repair(repair::RepairCommand),
}

/// What a command needs besides its own arguments.
pub struct Context_ {
    pub global: GlobalArgs,
    /// The configuration file, if one was named or `./coffer.toml` exists.
    pub config: Option<crate::config::Loaded>,
    pub cancel: Arc<AtomicBool>,
    /// What a command reports for the notification body (`snapshot_id`, `sources`, `summary`,
    /// `warnings`), set with [`Context_::report`].
    pub details: std::sync::Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl Context_ {
    /// Records `key` in the notification body of this run.
    pub fn report(&self, key: &str, value: serde_json::Value) {
        if let Ok(mut details) = self.details.lock() {
            details.insert(key.to_string(), value);
        }
    }
}

/// The commands run on a schedule: `(name, notifies, takes the run lock)`. All send
/// notifications (`crate::notify`) but repair, which is run by hand; all take the run lock
/// (`crate::runlock`) but prune, whose maintenance lease already keeps a second prune out (it
/// exits 11 at once, as documented).
fn scheduled(command: &Command) -> Option<(&'static str, bool, bool)> {
    Some(match command {
        // A dry run saves nothing: no notification, no run lock.
        Command::Backup(a) if a.dry_run => return None,
        Command::Backup(_) => ("backup", true, true),
        Command::Forget(_) => ("forget", true, true),
        Command::Prune(_) => ("prune", true, false),
        Command::Check(_) => ("check", true, true),
        // Listing the drill history is no scheduled drill.
        Command::Drill(a) if a.list => return None,
        Command::Drill(_) => ("drill", true, true),
        Command::Copy(_) => ("copy", true, true),
        Command::Repair(_) => ("repair", false, true),
        _ => return None,
    })
}

pub fn run(cli: Cli, cancel: Arc<AtomicBool>) -> Result<u8> {
    let mut global = cli.global;
    let config = crate::config::load(global.config.as_deref())
        .map_err(|e| crate::exit::usage(format!("{e:#}")))?;
    if let Some(loaded) = &config {
        crate::config::apply_to_global(&mut global, loaded);
    }
    let ctx = Context_ {
        global,
        config,
        cancel,
        details: Default::default(),
    };
    let schedule = scheduled(&cli.command);
    let targets = match schedule {
        Some((_, true, _)) => crate::notify::Targets::new(
            ctx.config.as_ref().and_then(|l| l.config.notify.as_ref()),
            &ctx.global.notify,
            &ctx.config.as_ref().map_or_else(
                || std::path::PathBuf::from("."),
                |l| l.resolve(std::path::Path::new("")),
            ),
        )
        .map_err(crate::exit::usage)?,
        _ if !ctx.global.notify.is_empty() => {
            return Err(crate::exit::usage(
                "--notify applies to backup, forget, prune, check, drill and copy",
            ))
        }
        _ => crate::notify::Targets::default(),
    };
    let _run_lock = match schedule {
        Some((name, _, true)) => crate::runlock::acquire(&ctx, name)?,
        _ => None,
    };
    if targets.is_empty() {
        return dispatch(&ctx, cli.command);
    }
    let name = schedule.map(|(n, _, _)| n).unwrap_or_default();
    targets.start();
    let started = jiff::Timestamp::now();
    let result = dispatch(&ctx, cli.command);
    let body = crate::notify_body::body(&ctx, name, started, &result);
    targets.finish(&body, matches!(result, Ok(crate::exit::OK)));
    result
}

fn dispatch(ctx: &Context_, command: Command) -> Result<u8> {
    match command {
        Command::Init(a) => init::run(ctx, a),
        Command::Backup(a) => backup::run(ctx, a),
        Command::Snapshots(a) => snapshots::run(ctx, a),
        Command::Ls(a) => ls::run(ctx, a),
        Command::Restore(a) => restore::run(ctx, a),
        Command::Drill(a) => drill::run(ctx, a),
        Command::Dump(a) => dump::run(ctx, a),
        Command::Copy(a) => copy::run(ctx, a),
        Command::Cat(a) => cat::run(ctx, a),
        Command::Key(a) => key::run(ctx, a),
        Command::Forget(a) => forget::run(ctx, a),
        Command::Prune(a) => prune::run(ctx, a),
        Command::Check(a) => check::run(ctx, a),
        Command::Unlock(a) => unlock::run(ctx, a),
        Command::Status(a) => status::run(ctx, a),
        Command::Diff(a) => diff::run(ctx, a),
        Command::Stats(a) => stats::run(ctx, a),
        Command::Completions(a) => completions::completions(ctx, a),
        Command::Man(a) => completions::man(ctx, a),
        Command::Repair(a) => repair::run(ctx, a),
    }
}

/// Opens the repository named by the global options, asking for the password.
pub fn open_repo(ctx: &Context_) -> Result<Repository> {
    open_repo_with(ctx, Repository::open)
}

/// As [`open_repo`], with `open` doing the opening (e.g. `Repository::open_without_index`).
pub fn open_repo_with(
    ctx: &Context_,
    open: fn(Storage, &[u8]) -> coffer_repo::Result<Repository>,
) -> Result<Repository> {
    let location = ctx.global.repo()?;
    let options = ctx.global.storage_options(&ctx.global.options);
    let storage = Storage::open_with(location, OpenMode::Existing, &options)?;
    let password = crate::password::get(&ctx.global, false)?;
    let shown = storage.location().to_string();
    let started = std::time::Instant::now();
    let repo = open(storage, &password).with_context(|| format!("opening repository {shown}"))?;
    tracing::info!(
        "repository {} opened (key derived, index loaded) in {:.2} s",
        crate::escape::message(&shown),
        started.elapsed().as_secs_f64()
    );
    for warning in repo.index().damaged_plans() {
        eprintln!("warning: {}", crate::escape::message(&warning.to_string()));
    }
    Ok(repo)
}

/// Every snapshot of `repo`; the damaged ones are named on stderr and set apart.
pub fn load_snapshots(repo: &Repository) -> Result<coffer_repo::format::snapshot::Snapshots> {
    let started = std::time::Instant::now();
    let all = coffer_repo::Snapshot::load_all(repo.storage(), repo.keys())?;
    tracing::info!(
        "{} snapshot(s) loaded in {:.2} s",
        all.good.len(),
        started.elapsed().as_secs_f64()
    );
    for warning in all.damage_warnings() {
        eprintln!("warning: {}", crate::escape::message(&warning.to_string()));
    }
    Ok(all)
}

/// The drill history of `repo` (drill results and drills recorded as labels on `snapshots`);
/// drill results that cannot be read are named on stderr and left out.
pub fn load_drill_history(
    repo: &Repository,
    snapshots: &[(coffer_repo::SnapshotId, coffer_repo::Snapshot)],
) -> Result<coffer_repo::ops::drill_history::History> {
    let history = coffer_repo::ops::drill_history::History::load(repo, snapshots)?;
    for (_, e) in &history.damaged {
        eprintln!(
            "warning: {} (left out of the drill history)",
            crate::escape::message(&e.to_string())
        );
    }
    Ok(history)
}

pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            std::fs::metadata("/proc/self")
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    format!("uid{}", m.uid())
                })
                .unwrap_or_default()
        })
}

/// `KEY=VALUE` for `--label`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c == '=') {
        return Err(format!("{k:?} is not a valid label key"));
    }
    Ok((k.to_string(), v.to_string()))
}
