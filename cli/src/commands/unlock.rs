//! `coffer unlock`: clear a maintenance lease left by a prune that is gone.

use super::Context_;
use anyhow::Result;
use coffer_repo::repository::lease;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Backups never take a lock, so they are never blocked. Only prune holds \
the maintenance lease, and a lease whose prune died frees itself when it expires (at once if \
the prune ran on this host). Use --all only when you are certain no prune is running: a prune \
whose lease is cleared stops before its next deletion."
)]
pub struct Args {
    /// Also clear a lease that still looks held
    #[arg(long)]
    pub all: bool,
    /// Print JSON: `{"cleared": WHAT or null, "why": REASON or null, "held_by": WHO or null}`
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let done = lease::unlock(repo.storage(), repo.keys(), &super::hostname(), args.all)?;
    if args.json {
        let value = serde_json::json!({
            "cleared": done.cleared.as_ref().map(|(r, _)| r.describe()),
            "why": done.cleared.as_ref().map(|(_, why)| why.clone()),
            "held_by": done.held.as_ref().map(|h| h.describe()),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
    }
    if let Some(held) = done.held {
        if args.json {
            return Ok(crate::exit::LOCKED);
        }
        eprintln!(
            "coffer: the maintenance lease is held by {}; left alone (pass --all to clear it anyway)",
            crate::escape::message(&held.describe())
        );
        return Ok(crate::exit::LOCKED);
    }
    if args.json {
        return Ok(crate::exit::OK);
    }
    match done.cleared {
        Some((record, why)) => {
            if !ctx.global.quiet {
                outln!(
                    "cleared the lease of {} ({why})",
                    crate::escape::message(&record.describe())
                );
            }
        }
        None => {
            if !ctx.global.quiet {
                outln!("no maintenance lease to clear");
            }
        }
    }
    Ok(crate::exit::OK)
}
