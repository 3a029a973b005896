//! `coffer check`: verify the repository; exit 1 listing what is damaged.

use super::Context_;
use crate::output;
use anyhow::Result;
use coffer_repo::ops::check::{self as op, CheckOptions, ReadData};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without --read-data, check reads index files, pack headers, snapshots \
and trees. --read-data also decrypts and verifies every blob; --read-data-subset reads part of \
the packs: N/M (part N of M, e.g. one part a night) or P% (a random share).
Exit code 0: no damage (warnings, such as unindexed packs or staging files left by interrupted \
writes, do not change it); 1: damage found (listed, with the snapshots and paths it reaches)."
)]
pub struct Args {
    /// Read, decrypt and verify every blob
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify part of the packs: N/M or P%
    #[arg(long, value_name = "N/M|P%", value_parser = parse_subset)]
    pub read_data_subset: Option<ReadData>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_subset(s: &str) -> Result<ReadData, String> {
    s.parse::<ReadData>().map_err(|e| e.to_string())
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    // Check reads every index file itself: a damaged one is reported, not fatal.
    let repo = super::open_repo_with(ctx, coffer_repo::Repository::open_without_index)?;
    let read_data = if args.read_data {
        ReadData::All
    } else {
        args.read_data_subset.unwrap_or(ReadData::None)
    };
    let counters = std::sync::Arc::new(coffer_repo::ops::progress::Progress::new());
    let display = crate::progress::start_bar(ctx, args.json, "check", "packs", counters.clone())?;
    let report = op::check_with_progress(
        &repo,
        &CheckOptions {
            read_data,
            cancel: ctx.cancel.clone(),
        },
        &counters,
    );
    display.finish();
    let report = report?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !ctx.global.quiet {
            for w in &report.warnings {
                eprintln!(
                    "warning: {}: {}",
                    crate::escape::message(&w.object),
                    crate::escape::message(&w.message)
                );
            }
        }
        for e in &report.errors {
            eprintln!(
                "error: {}: {}",
                crate::escape::message(&e.object),
                crate::escape::message(&e.message)
            );
        }
        for d in &report.damaged_paths {
            eprintln!(
                "damaged: snapshot {} {}: {}",
                d.snapshot.short(),
                crate::escape::name(&d.path),
                crate::escape::message(&d.reason)
            );
        }
        if !report.damaged_snapshots.is_empty() {
            eprintln!("damaged snapshots (cannot be restored completely):");
            for s in &report.damaged_snapshots {
                eprintln!("  {}", crate::escape::message(&s.to_string()));
            }
        }
        if !ctx.global.quiet {
            outln!(
                "checked {} snapshot(s), {} index file(s), {} pack(s), {} blob(s); read {} pack(s) ({}), verified {} blob(s)",
                report.snapshots,
                report.index_files,
                report.packs,
                report.blobs,
                report.packs_read,
                output::bytes(report.bytes_read),
                report.blobs_verified
            );
        }
    }
    if report.is_clean() {
        if !ctx.global.quiet && !args.json {
            outln!("no damage found");
        }
        Ok(crate::exit::OK)
    } else {
        if !args.json {
            eprintln!(
                "coffer: damage found: {} problem(s), {} damaged snapshot(s)",
                report.errors.len(),
                report.damaged_snapshots.len()
            );
            if !report.repairs.is_empty() {
                eprintln!(
                    "  to recover (see docs/maintenance.md, \"When a pack is lost\"): run `{}`",
                    report.repairs.join("`, then `")
                );
            }
        }
        Ok(crate::exit::ERROR)
    }
}
