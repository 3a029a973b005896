//! `coffer snapshots`: list snapshots, oldest first, with filters; or one snapshot in detail
//! (labels, sources, database facts and per-table row counts, its last drill).

use super::Context_;
use crate::escape::{name, names};
use crate::output;
use anyhow::Result;
use coffer_repo::{Snapshot, SnapshotId};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer snapshots --label app_version=2.3.1
  coffer snapshots latest --details
  coffer snapshots 3fa2 --details --json")]
pub struct Args {
    /// Show only this snapshot (id, prefix or `latest`)
    pub snapshot: Option<String>,
    /// Show everything: labels, sources, dump facts, row counts per table, the last drill
    #[arg(long)]
    pub details: bool,
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
    let all = super::load_snapshots(&repo)?;
    let list: Vec<&(SnapshotId, Snapshot)> = match &args.snapshot {
        Some(spec) => vec![all.resolve(spec)?],
        None => all
            .good
            .iter()
            .filter(|(_, s)| matches(s, &args.tag, &args.label, args.host.as_deref()))
            .collect(),
    };
    let history = if args.details {
        Some(super::load_drill_history(&repo, &all.good)?)
    } else {
        None
    };
    let last_drill = |id: &SnapshotId| history.as_ref().and_then(|h| h.last_of_snapshot(id));
    if args.details && !args.json {
        for (id, s) in &list {
            print_details(id, s, last_drill(id))?;
        }
        return Ok(crate::exit::OK);
    }
    if args.json {
        let values = list
            .iter()
            .map(|(id, s)| {
                let mut value = flat_json(id, s)?;
                if let (Some(map), true) = (value.as_object_mut(), args.details) {
                    map.insert("last_drill".into(), serde_json::to_value(last_drill(id))?);
                }
                Ok(value)
            })
            .collect::<Result<Vec<_>>>()?;
        outln!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(crate::exit::OK);
    }
    outln!(
        "{:<8}  {:<19}  {:<12}  {:>10}  {:<16}  paths",
        "id",
        "time",
        "host",
        "size",
        "tags"
    );
    for (id, s) in &list {
        outln!(
            "{:<8}  {:<19}  {:<12}  {:>10}  {:<16}  {}",
            id.short(),
            output::local_time(s.time.timestamp()),
            name(&s.hostname),
            output::bytes(s.summary.total_bytes),
            names(&s.tags, ","),
            names(&s.paths, " ")
        );
        if !s.labels.is_empty() {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{}={}", name(k), name(v)))
                .collect();
            outln!("{:<8}  labels: {}", "", labels.join(" "));
        }
    }
    if !ctx.global.quiet {
        outln!("{} snapshot(s)", list.len());
    }
    Ok(crate::exit::OK)
}

/// One snapshot as `snapshots --json` prints it: a flat object with restic's field names where
/// the concept is the same (`id`, `short_id`, `time`, `tree`, `paths`, `hostname`, `username`,
/// `tags`, `parent`, `excludes`, `program_version`, `summary`) and Coffer's beside them
/// (`labels`, `sources`, `key_id`, `original`, `copied_from`).
pub fn flat_json(id: &SnapshotId, s: &Snapshot) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(s)?;
    // Stored role password hashes (`roles-with-passwords`) stay out of listings, which end up
    // in logs: `coffer cat snapshot ID` shows the whole document.
    if let Some(sources) = value.get_mut("sources").and_then(|v| v.as_array_mut()) {
        for source in sources {
            let roles = source
                .get_mut("postgres")
                .and_then(|p| p.get_mut("roles"))
                .and_then(|r| r.as_array_mut());
            for role in roles.into_iter().flatten() {
                if let Some(password) = role.get_mut("password") {
                    *password = "<redacted>".into();
                }
            }
        }
    }
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), id.to_hex().into());
        map.insert("short_id".into(), id.short().into());
    }
    Ok(value)
}

fn print_details(
    id: &SnapshotId,
    s: &Snapshot,
    drill: Option<&coffer_repo::ops::drill_history::Entry>,
) -> anyhow::Result<()> {
    outln!("snapshot {}", id.to_hex());
    outln!("  time      {}", name(&s.time));
    outln!(
        "  host      {} (user {})",
        name(&s.hostname),
        name(&s.username)
    );
    outln!("  paths     {}", names(&s.paths, " "));
    if !s.tags.is_empty() {
        outln!("  tags      {}", names(&s.tags, ", "));
    }
    if let Some(p) = &s.parent {
        outln!("  parent    {}", p.short());
    }
    let m = &s.summary;
    outln!(
        "  size      {} in {} files; {} added ({} stored)",
        output::bytes(m.total_bytes),
        m.files,
        output::bytes(m.added_raw_bytes),
        output::bytes(m.added_stored_bytes)
    );
    for a in &m.anomalies {
        outln!("  anomaly   {}", name(a));
    }
    for (k, v) in &s.labels {
        outln!("  label     {}={}", name(k), name(v));
    }
    match drill {
        None => outln!("  drill     none recorded"),
        Some(e) => {
            let r = &e.result;
            let rto = r
                .rto_seconds
                .map(|t| format!(", restore time {t:.1} s"))
                .unwrap_or_default();
            let host = if e.legacy {
                String::new()
            } else {
                format!(" on {}", name(&r.hostname))
            };
            outln!(
                "  drill     {} {}{host}{rto}",
                if r.passed { "passed" } else { "FAILED" },
                output::local_time(r.time.timestamp())
            );
            for src in r.sources.iter().filter(|x| !x.passed) {
                outln!(
                    "            {} FAILED: {}",
                    name(&src.name),
                    name(&src.checked)
                );
            }
            if let Some(error) = &r.error {
                outln!("            error: {}", crate::escape::message(error));
            }
        }
    }
    for source in &s.sources {
        outln!(
            "  source    {} ({}) at {}",
            name(&source.name),
            name(&source.kind),
            name(&source.tree_path)
        );
        if let Some(st) = &source.stream {
            outln!(
                "            {} bytes, sha256 {}, {:.2} s",
                st.bytes,
                name(&st.sha256),
                st.duration_seconds
            );
        }
        if let Some(pg) = &source.postgres {
            outln!(
                "            database {}, server {}, {} format, {} TOC entries",
                name(&pg.database),
                name(&pg.server_version),
                name(&pg.format),
                pg.toc_entries
            );
            for t in &pg.tables {
                outln!(
                    "            {:>12} rows  {}.{}",
                    t.rows,
                    name(&t.schema),
                    name(&t.table)
                );
            }
            if let Some(roles) = &pg.roles {
                for r in roles {
                    let mut why = Vec::new();
                    if r.owner {
                        why.push("owner");
                    }
                    if r.acl {
                        why.push("privileges");
                    }
                    if r.database_owner {
                        why.push("database owner");
                    }
                    if r.login {
                        why.push("login");
                    }
                    if r.password.is_some() {
                        why.push("password stored");
                    }
                    outln!("            role {} ({})", name(&r.name), why.join(", "));
                }
            }
        }
    }
    Ok(())
}
