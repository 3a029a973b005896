//! `coffer snapshots`: list snapshots, oldest first, with filters.

use super::Context_;
use crate::output;
use anyhow::Result;
use coffer_repo::{snapshot, Snapshot, SnapshotId};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only snapshots with this tag (repeat: all of them)
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Only snapshots with this label (repeat: all of them)
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_label)]
    pub label: Vec<(String, String)>,
    /// Only snapshots of this host
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Whether `s` passes the filters.
pub fn matches(
    s: &Snapshot,
    tags: &[String],
    labels: &[(String, String)],
    host: Option<&str>,
) -> bool {
    tags.iter().all(|t| s.tags.contains(t))
        && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        && host.is_none_or(|h| s.hostname == h)
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = snapshot::load_all(repo.storage(), repo.keys())?;
    let list: Vec<&(SnapshotId, Snapshot)> = all
        .iter()
        .filter(|(_, s)| matches(s, &args.tag, &args.label, args.host.as_deref()))
        .collect();
    if args.json {
        let values: Vec<_> = list
            .iter()
            .map(|(id, s)| serde_json::json!({ "id": id, "snapshot": s }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(crate::exit::OK);
    }
    println!(
        "{:<8}  {:<25}  {:<12}  {:>10}  {:<16}  paths",
        "id", "time", "host", "size", "tags"
    );
    for (id, s) in &list {
        println!(
            "{:<8}  {:<25}  {:<12}  {:>10}  {:<16}  {}",
            id.short(),
            s.time.get(..25).unwrap_or(&s.time),
            s.hostname,
            output::bytes(s.summary.total_bytes),
            s.tags.join(","),
            s.paths.join(" ")
        );
        if !s.labels.is_empty() {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<8}  labels: {}", "", labels.join(" "));
        }
    }
    if !ctx.global.quiet {
        println!("{} snapshot(s)", list.len());
    }
    Ok(crate::exit::OK)
}
