//! `coffer repair index|snapshots`: recover after data was lost (docs/maintenance.md, "When a
//! pack is lost").

use super::Context_;
use anyhow::Result;
use clap::Subcommand;
use coffer_repo::ops::repair::{self as op, RepairIndexOptions, RepairSnapshotsOptions};
use coffer_repo::repository::lease::LeaseOptions;

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs present: drop entries of missing packs, add packs no
    /// index names (takes the maintenance lease, as prune does)
    Index(IndexArgs),
    /// Rewrite snapshots that refer to lost data: files with lost content are removed, lost
    /// directories become empty, and every such path is listed
    Snapshots(SnapshotsArgs),
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Reads and authenticates the header of every pack, writes one index file \
naming exactly the packs present, then removes the old index files. Backups may run meanwhile; \
another prune or repair cannot (exit 11). Run `coffer repair snapshots` next.
Exit codes: 0 done (what was added and dropped is listed), 1 error, 11 locked, 130 interrupted."
)]
pub struct IndexArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "A repaired snapshot is a new snapshot with the tag `repaired` and the \
labels `repaired-from` (the original's id) and `repaired-damage`. Run `coffer repair index` \
first, so that the index names only data that is there and the next backup stores the lost \
data again.
Exit codes: 0 done (every damaged path is listed), 1 error, 130 interrupted."
)]
pub struct SnapshotsArgs {
    /// Remove each original once its repaired copy is saved
    #[arg(long)]
    pub forget: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Snapshots to repair (ids, prefixes or `latest`); default: every snapshot
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

pub fn run(ctx: &Context_, command: RepairCommand) -> Result<u8> {
    match command {
        RepairCommand::Index(args) => index(ctx, args),
        RepairCommand::Snapshots(args) => snapshots(ctx, args),
    }
}

fn index(ctx: &Context_, args: IndexArgs) -> Result<u8> {
    // The index is what is being rebuilt: it is not loaded.
    let repo = super::open_repo_with(ctx, coffer_repo::Repository::open_without_index)?;
    let report = op::repair_index(
        &repo,
        &RepairIndexOptions {
            lease: LeaseOptions::new("repair index", &super::hostname()),
            cancel: ctx.cancel.clone(),
        },
    )?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(crate::exit::OK);
    }
    for pack in &report.packs_dropped {
        eprintln!("dropped: pack {pack} is missing; its blobs are no longer indexed");
    }
    for pack in &report.packs_added {
        eprintln!("added: pack {pack} was in no index");
    }
    for damaged in &report.packs_damaged {
        eprintln!(
            "warning: pack {} not indexed: {}",
            damaged.pack, damaged.reason
        );
    }
    if !ctx.global.quiet {
        outln!(
            "indexed {} of {} pack(s) ({} blob(s)); added {} pack(s), dropped {} missing pack(s) ({} blob entries), {} left to deletion plans; removed {} old index file(s)",
            report.packs_indexed,
            report.packs,
            report.blobs_indexed,
            report.packs_added.len(),
            report.packs_dropped.len(),
            report.blobs_dropped,
            report.packs_pending,
            report.index_files_removed
        );
        if !report.packs_dropped.is_empty() {
            outln!("next: `coffer repair snapshots` rewrites the snapshots that used them");
        }
    }
    Ok(crate::exit::OK)
}

fn snapshots(ctx: &Context_, args: SnapshotsArgs) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let report = op::repair_snapshots(
        &repo,
        &RepairSnapshotsOptions {
            snapshots: args.snapshots,
            forget: args.forget,
            cancel: ctx.cancel.clone(),
        },
    )?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(crate::exit::OK);
    }
    for r in &report.repaired {
        outln!(
            "snapshot {} -> {} (repaired{}):",
            r.original.short(),
            r.repaired.short(),
            if r.forgotten {
                ", original removed"
            } else {
                ""
            }
        );
        for d in &r.damage {
            outln!(
                "  {}: {} ({})",
                crate::escape::name(&d.path),
                d.action,
                crate::escape::message(&d.reason)
            );
        }
    }
    if !ctx.global.quiet {
        outln!(
            "checked {} snapshot(s); {} repaired",
            report.snapshots,
            report.repaired.len()
        );
    }
    Ok(crate::exit::OK)
}
