//! `coffer prune`: remove data no snapshot needs (two-phase, under the maintenance lease).

use super::Context_;
use crate::output;
use anyhow::Result;
use coffer_repo::ops::prune::{self as op, PruneOptions, PruneReport};
use coffer_repo::repository::lease::LeaseOptions;
use coffer_repo::Repository;
use std::time::Duration;

/// Options shared by `prune` and `forget --prune`.
#[derive(clap::Args, Debug, Clone)]
pub struct PruneFlags {
    /// Repack packs with more than this share unused (e.g. 5%, 0% to repack every partly used pack)
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Delete condemned data only this long after it was condemned; must exceed the longest
    /// backup (e.g. 24h, 90m; 0s deletes at once and is safe only while no backup runs)
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub grace: Duration,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Prune never makes a backup wait. It condemns unused packs in a deletion \
plan and deletes them in a later prune, once the grace period has passed; a backup that still \
needs one of them keeps it. Only one prune runs at a time (a lease that expires by itself if \
the prune dies). See docs/maintenance.md."
)]
pub struct Args {
    #[command(flatten)]
    pub flags: PruneFlags,
    /// Show what would be removed and the bytes reclaimed; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    let v: f64 = t
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 5%)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?} must be between 0% and 100%"));
    }
    Ok(v / 100.0)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a duration such as 24h, 90m or 0s: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

pub fn options(ctx: &Context_, flags: &PruneFlags, dry_run: bool) -> PruneOptions {
    PruneOptions {
        max_unused: flags.max_unused,
        grace: flags.grace,
        dry_run,
        lease: LeaseOptions::new("prune", &super::hostname()),
        cancel: ctx.cancel.clone(),
        progress: Default::default(),
    }
}

/// Runs the prune with a progress bar (repacking: blobs moved, bytes) when stderr is a
/// terminal.
fn prune_shown(
    ctx: &Context_,
    repo: &Repository,
    options: &PruneOptions,
    json: bool,
) -> Result<coffer_repo::Result<PruneReport>> {
    let display =
        crate::progress::start_bar(ctx, json, "prune", "blobs", options.progress.clone())?;
    let report = op::prune(repo, options);
    display.finish();
    Ok(report)
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    // Forget needs only the snapshots, and prune loads the index itself after listing them
    // (the order its safety argument needs): loading it at open as well only cost time.
    let repo = super::open_repo_with(ctx, coffer_repo::Repository::open_without_index)?;
    let report = prune_shown(
        ctx,
        &repo,
        &options(ctx, &args.flags, args.dry_run),
        args.json,
    )?
    .map_err(|e| {
        if matches!(e, coffer_repo::Error::Missing { .. }) {
            anyhow::Error::new(e)
                .context("prune refuses to run on a damaged repository; nothing was deleted")
        } else {
            e.into()
        }
    })?;
    warn(&report);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(ctx, &report)?;
    }
    Ok(crate::exit::OK)
}

/// Runs `forget` and then prune for `forget --prune`, overlapping their round trips
/// ([`op::prune_after`]); prints the prune's human report unless `json`. Returns forget's value
/// (or its error, with nothing pruned) and the prune's result.
pub fn prune_after_forget<F: Send>(
    ctx: &Context_,
    repo: &Repository,
    flags: &PruneFlags,
    json: bool,
    forget: impl FnOnce() -> coffer_repo::Result<F> + Send,
) -> Result<(F, Result<PruneReport>)> {
    let options = options(ctx, flags, false);
    let display =
        crate::progress::start_bar(ctx, json, "prune", "blobs", options.progress.clone())?;
    let outcome = op::prune_after(repo, &options, forget);
    display.finish();
    let (forgotten, report) = outcome?;
    let report = report.map_err(anyhow::Error::from).and_then(|report| {
        warn(&report);
        if !json {
            print(ctx, &report)?;
        }
        Ok(report)
    });
    Ok((forgotten, report))
}

/// Damaged deletion plans, on stderr whatever the output format.
fn warn(report: &PruneReport) {
    for w in &report.warnings {
        eprintln!("warning: {}", crate::escape::message(&w.to_string()));
    }
}

fn print(ctx: &Context_, r: &PruneReport) -> anyhow::Result<()> {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if !ctx.global.quiet || r.dry_run {
        for removal in &r.removals {
            let when = if removal.when == "now" {
                verb
            } else if r.dry_run {
                "would condemn"
            } else {
                "condemned"
            };
            outln!(
                "{when:<14} {:<72} {:>10}  {}",
                crate::escape::message(&removal.object),
                output::bytes(removal.bytes),
                crate::escape::message(&removal.reason)
            );
        }
    }
    if ctx.global.quiet {
        return Ok(());
    }
    outln!(
        "{} snapshot(s), {} pack(s) holding {}; {} blob(s) in use ({})",
        r.snapshots,
        r.packs,
        output::bytes(r.pack_bytes),
        r.blobs_used,
        output::bytes(r.bytes_used)
    );
    let will = if r.dry_run { "would be " } else { "" };
    outln!(
        "repacked: {}{} pack(s), {} blob(s), {} copied into {} new pack(s)",
        will,
        r.packs_repacked,
        r.blobs_repacked,
        output::bytes(r.bytes_repacked),
        r.packs_written
    );
    outln!(
        "condemned: {}{} pack(s), {} (deleted by a prune after the grace period)",
        will,
        r.packs_condemned,
        output::bytes(r.bytes_condemned)
    );
    outln!(
        "{verb}: {} pack(s), {} index file(s), {} reclaimed; {} pack(s) kept because a snapshot needs them",
        r.packs_deleted,
        r.index_files_deleted,
        output::bytes(r.bytes_deleted),
        r.packs_reindexed
    );
    if r.staging_removed > 0 || r.staging_kept > 0 {
        outln!(
            "{verb}: {} staging file(s) left by interrupted writes, {}; {} younger than a day kept",
            r.staging_removed,
            output::bytes(r.staging_bytes),
            r.staging_kept
        );
    }
    if r.packs_kept_young > 0 {
        outln!(
            "kept: {} pack(s) that only a backup's or copy's checkpoint names, under an hour old \
             (it may still be running; an interrupted one's packs go once they are an hour old)",
            r.packs_kept_young
        );
    }
    if r.plans_pending > 0 {
        outln!(
            "{} deletion plan(s) wait for their grace period; run prune again later",
            r.plans_pending
        );
    }
    Ok(())
}
