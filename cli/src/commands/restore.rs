//! `coffer restore`: a snapshot back into a directory.

use super::Context_;
use crate::output;
use anyhow::{Context, Result};
use coffer_repo::ops::restore::{self as op, RestoreOptions};
use coffer_repo::snapshot;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Directory to restore into (created if missing); paths keep their place below it
    #[arg(long, short = 't', value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only this snapshot path and what is below it (repeatable)
    #[arg(long, value_name = "PATH")]
    pub include: Vec<String>,
    /// Replace existing files (without it, an existing file stops the restore before anything is written)
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = snapshot::load_all(repo.storage(), repo.keys())?;
    let (id, snap) = snapshot::resolve(&all, &args.snapshot)?;
    let options = RestoreOptions {
        target: args.target.clone(),
        includes: args.include.clone(),
        overwrite: args.overwrite,
    };
    let report = op::restore(&repo, snap, &options, &ctx.cancel)
        .with_context(|| format!("restoring snapshot {}", id.short()))?;
    if !ctx.global.quiet {
        println!(
            "restored snapshot {} into {}: {} files, {} dirs, {} symlinks, {}",
            id.short(),
            args.target.display(),
            report.files,
            report.dirs,
            report.symlinks,
            output::bytes(report.bytes)
        );
    }
    Ok(crate::exit::OK)
}
