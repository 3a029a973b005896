//! `coffer diff A B`: what changed between two snapshots: files added, removed and changed
//! (with sizes), and per database source the tables whose row counts moved.

use super::Context_;
use crate::escape::name;
use crate::output;
use anyhow::Result;
use coffer_repo::format::tree::{Node, NodeKind};
use coffer_repo::ops::walk;
use coffer_repo::{BlobId, Repository, Snapshot};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer diff 3fa2 latest
  coffer diff 3fa2 latest --json")]
pub struct Args {
    /// The older snapshot (id, prefix or `latest`)
    pub from: String,
    /// The newer snapshot (id, prefix or `latest`)
    pub to: String,
    /// Print JSON: `{"added": [{"path", "size"}], "removed": [...], "changed": [{"path",
    /// "old_size", "new_size"}], "tables": [{"source", "schema", "table", "old_rows",
    /// "new_rows"}]}`
    #[arg(long)]
    pub json: bool,
}

/// What a path is in one snapshot, as far as a diff cares.
#[derive(PartialEq)]
struct Entry {
    kind: NodeKind,
    size: u64,
    content: Vec<BlobId>,
    target: Option<String>,
}

fn entries(repo: &Repository, root: &BlobId) -> Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    walk::walk(repo, root, "", &mut |path: &str, node: &Node| {
        out.insert(
            path.to_string(),
            Entry {
                kind: node.kind,
                size: node.size,
                content: node.content.clone(),
                target: node.target.clone(),
            },
        );
        Ok(true)
    })?;
    Ok(out)
}

/// `(source, schema, table, old rows, new rows)` for every table whose count moved, appeared
/// or went, in sources of the same name.
type TableChange = (String, String, String, Option<u64>, Option<u64>);

fn table_changes(a: &Snapshot, b: &Snapshot) -> Vec<TableChange> {
    let mut out = Vec::new();
    for new in &b.sources {
        let Some(new_pg) = &new.postgres else {
            continue;
        };
        let old_pg = a
            .sources
            .iter()
            .find(|s| s.name == new.name)
            .and_then(|s| s.postgres.as_ref());
        let mut rows: BTreeMap<(String, String), (Option<u64>, Option<u64>)> = BTreeMap::new();
        for t in old_pg.map(|p| p.tables.as_slice()).unwrap_or_default() {
            rows.entry((t.schema.clone(), t.table.clone()))
                .or_default()
                .0 = Some(t.rows);
        }
        for t in &new_pg.tables {
            rows.entry((t.schema.clone(), t.table.clone()))
                .or_default()
                .1 = Some(t.rows);
        }
        for ((schema, table), (old, new_rows)) in rows {
            if old != new_rows {
                out.push((new.name.clone(), schema, table, old, new_rows));
            }
        }
    }
    out
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    let (_, a) = all.resolve(&args.from)?;
    let (_, b) = all.resolve(&args.to)?;
    let old = entries(&repo, &a.tree)?;
    let new = entries(&repo, &b.tree)?;
    let added: Vec<(&String, &Entry)> = new.iter().filter(|(p, _)| !old.contains_key(*p)).collect();
    let removed: Vec<(&String, &Entry)> =
        old.iter().filter(|(p, _)| !new.contains_key(*p)).collect();
    let changed: Vec<(&String, &Entry, &Entry)> = new
        .iter()
        .filter_map(|(p, e)| old.get(p).filter(|o| *o != e).map(|o| (p, o, e)))
        .filter(|(_, o, e)| !(o.kind == NodeKind::Dir && e.kind == NodeKind::Dir))
        .collect();
    let tables = table_changes(a, b);
    if args.json {
        let value = json!({
            "added": added.iter().map(|(p, e)| json!({"path": p, "size": e.size})).collect::<Vec<_>>(),
            "removed": removed.iter().map(|(p, e)| json!({"path": p, "size": e.size})).collect::<Vec<_>>(),
            "changed": changed.iter().map(|(p, o, e)| json!({"path": p, "old_size": o.size, "new_size": e.size})).collect::<Vec<_>>(),
            "tables": tables.iter().map(|(s, schema, t, o, n)| json!({"source": s, "schema": schema, "table": t, "old_rows": o, "new_rows": n})).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(crate::exit::OK);
    }
    for (p, e) in &added {
        outln!("+ {}  {}", name(p), output::bytes(e.size));
    }
    for (p, e) in &removed {
        outln!("- {}  {}", name(p), output::bytes(e.size));
    }
    for (p, o, e) in &changed {
        outln!(
            "M {}  {} -> {}",
            name(p),
            output::bytes(o.size),
            output::bytes(e.size)
        );
    }
    let rows = |r: &Option<u64>| r.map_or("(none)".to_string(), |n| n.to_string());
    for (source, schema, table, o, n) in &tables {
        outln!(
            "T {} {}.{}  rows {} -> {}",
            name(source),
            name(schema),
            name(table),
            rows(o),
            rows(n)
        );
    }
    if !ctx.global.quiet {
        outln!(
            "{} added, {} removed, {} changed; {} table(s) with other row counts",
            added.len(),
            removed.len(),
            changed.len(),
            tables.len()
        );
    }
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(tables: &[(&str, u64)]) -> Snapshot {
        let tables: Vec<_> = tables
            .iter()
            .map(|(t, rows)| json!({"schema": "public", "table": t, "rows": rows}))
            .collect();
        serde_json::from_value(json!({
            "time": "2026-12-02T14:43:23+01:00",
            "tree": "00".repeat(32),
            "paths": ["/db"],
            "hostname": "h",
            "username": "u",
            "program_version": "0",
            "key_id": "k",
            "sources": [{
                "name": "db", "kind": "postgres", "tree_path": "/db/app.dump",
                "postgres": {"database": "app", "server_version": "15", "format": "custom",
                             "toc_entries": 1, "tables": tables}
            }]
        }))
        .unwrap()
    }

    #[test]
    fn table_changes_name_moved_new_and_gone_tables() {
        let a = snapshot(&[("users", 10), ("orders", 5), ("gone", 3)]);
        let b = snapshot(&[("users", 10), ("orders", 7), ("fresh", 1)]);
        let changes = table_changes(&a, &b);
        let names: Vec<(&str, Option<u64>, Option<u64>)> = changes
            .iter()
            .map(|(_, _, t, o, n)| (t.as_str(), *o, *n))
            .collect();
        assert_eq!(
            names,
            [
                ("fresh", None, Some(1)),
                ("gone", Some(3), None),
                ("orders", Some(5), Some(7))
            ]
        );
    }
}
