//! `coffer dump`: one file of a snapshot to standard output.

use super::Context_;
use anyhow::Result;
use coffer_repo::ops::walk;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  coffer dump latest db/app.dump | pg_restore -d app --clean --if-exists"
)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Path of the file inside the snapshot
    pub path: String,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    let (id, snap) = all.resolve(&args.snapshot)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    walk::dump(&repo, &snap.tree, &args.path, &id.short(), &mut out)?;
    Ok(crate::exit::OK)
}
