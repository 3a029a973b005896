//! `coffer status`: is the backup fresh? Per host and source set, the newest snapshot, its age,
//! its size against the usual, and the last drill (passed or FAILED); exit 1 when the newest is
//! older than `--max-age` or when the last drill of a host and source set failed.
//!
//! Without the password (none given, or `--no-password`) it still answers from the storage
//! listing alone: the number of snapshot objects and when the newest was written. Snapshot
//! objects are sealed, so that is all a host without the key can know, and all a monitoring
//! host needs to say "this repository stopped receiving backups".

use super::Context_;
use crate::output;
use anyhow::Result;
use coffer_repo::ops::drill_history::{self, Entry as DrillEntry, History};
use coffer_repo::{OpenMode, Snapshot, SnapshotId, Storage};
use std::io::IsTerminal;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer status --max-age 26h          (exit 1 when a source set's newest snapshot is older)
  coffer status --no-password --json   (from the storage listing alone: no key needed)

Exit code 0: fresh, and no host and source set's last drill failed. 1: a newest snapshot is
older than --max-age, the repository holds no snapshot while --max-age is given, or the last
drill of a host and source set FAILED (each reason on stderr).")]
pub struct Args {
    /// Exit 1 when the newest snapshot (of any host and source set) is older than this:
    /// a number with a unit, s, m, h, d or w (`26h`, `2d`, `1d12h`)
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub max_age: Option<jiff::SignedDuration>,
    /// Do not ask for the password: answer from the storage listing alone (also the default
    /// when no password is given and there is no terminal)
    #[arg(long)]
    pub no_password: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `26h`, `2d`, `1d12h`, `90m`, `45s`, `1w`: one or more number-unit pairs.
pub fn parse_age(s: &str) -> std::result::Result<jiff::SignedDuration, String> {
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("{s:?}: unknown unit {c:?} (use s, m, h, d or w)")),
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c:?}"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "{s:?}: give a unit after {digits} (s, m, h, d or w)"
        ));
    }
    if total <= 0 {
        return Err(format!("{s:?} is not a positive age (e.g. 26h)"));
    }
    Ok(jiff::SignedDuration::from_secs(total))
}

/// `3d 2h`, `5h 12m`, `40s`: an age for people.
pub fn human_age(age: jiff::SignedDuration) -> String {
    let secs = age.as_secs().max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Whether a password can be had without failing: a source is set or there is a terminal.
fn password_available(ctx: &Context_) -> bool {
    ctx.global.password_file.is_some()
        || ctx.global.password_command.is_some()
        || std::env::var_os("COFFER_PASSWORD").is_some()
        || std::io::stdin().is_terminal()
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    if args.no_password || !password_available(ctx) {
        return listing_only(ctx, &args);
    }
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    let now = jiff::Timestamp::now();
    let history = super::load_drill_history(&repo, &all.good)?;
    let groups = group(&all.good, &history, now);
    let stale: Vec<&Group> = groups
        .iter()
        .filter(|g| args.max_age.is_some_and(|max| g.age > max))
        .collect();
    let failed_drills: Vec<&Group> = groups.iter().filter(|g| g.drill_failed()).collect();
    let empty_and_watched = groups.is_empty() && args.max_age.is_some();
    if args.json {
        let value = serde_json::json!({
            "mode": "full",
            "max_age_seconds": args.max_age.map(|a| a.as_secs()),
            "ok": stale.is_empty() && !empty_and_watched && failed_drills.is_empty(),
            "groups": groups.iter().map(|g| g.json(args.max_age)).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else if !ctx.global.quiet || !stale.is_empty() || !failed_drills.is_empty() {
        print_groups(&groups, args.max_age)?;
    }
    let fresh = verdict(empty_and_watched, &stale, args.max_age)?;
    let drills = drill_verdict(&failed_drills);
    Ok(fresh.max(drills))
}

/// Exit 1 (with each failed drill on stderr) when the last drill of a host and source set
/// failed; else 0.
fn drill_verdict(failed: &[&Group]) -> u8 {
    for g in failed {
        let Some(e) = g.last_drill else { continue };
        let r = &e.result;
        let why = match &r.error {
            Some(error) => crate::escape::message(error).into_owned(),
            None => format!(
                "source(s) {} failed",
                crate::escape::names(&r.failed_sources(), ", ")
            ),
        };
        eprintln!(
            "coffer: the last drill of {} (snapshot {}, drilled {}) FAILED: {why}",
            g.label(),
            r.snapshot.short(),
            output::local_time(r.time.timestamp())
        );
    }
    if failed.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::ERROR
    }
}

/// Exit 1 (with the reasons on stderr) when something is stale; else 0.
fn verdict(empty: bool, stale: &[&Group], max: Option<jiff::SignedDuration>) -> Result<u8> {
    if empty {
        eprintln!("coffer: the repository holds no snapshot");
        return Ok(crate::exit::ERROR);
    }
    let Some(max) = max else {
        return Ok(crate::exit::OK);
    };
    for g in stale {
        eprintln!(
            "coffer: the newest snapshot of {} is {} old, more than --max-age {}",
            g.label(),
            human_age(g.age),
            human_age(max)
        );
    }
    Ok(if stale.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::ERROR
    })
}

/// The snapshots of one host and source set.
struct Group<'a> {
    hostname: &'a str,
    /// Source names of a configured backup, else the paths.
    sources: Vec<String>,
    count: usize,
    newest: &'a (SnapshotId, Snapshot),
    age: jiff::SignedDuration,
    /// Median total size of the (up to) 7 snapshots before the newest.
    usual_bytes: Option<u64>,
    /// The newest drill of a snapshot of the group (passed or failed, its snapshot present or
    /// forgotten since).
    last_drill: Option<&'a DrillEntry>,
    /// The time of the newest passed drill.
    last_passed_drill: Option<&'a str>,
}

impl Group<'_> {
    fn drill_failed(&self) -> bool {
        self.last_drill.is_some_and(|e| !e.result.passed)
    }

    fn label(&self) -> String {
        format!(
            "{} ({})",
            crate::escape::name(self.hostname),
            crate::escape::names(&self.sources, ", ")
        )
    }

    fn json(&self, max: Option<jiff::SignedDuration>) -> serde_json::Value {
        let (id, s) = self.newest;
        serde_json::json!({
            "hostname": self.hostname,
            "sources": self.sources,
            "snapshots": self.count,
            "newest": { "id": id.to_hex(), "short_id": id.short(), "time": s.time.as_str() },
            "age_seconds": self.age.as_secs(),
            "total_bytes": s.summary.total_bytes,
            "usual_total_bytes": self.usual_bytes,
            "last_drill": self.last_passed_drill,
            "last_drill_result": self.last_drill.map(|e| serde_json::json!({
                "id": e.id.map(|id| id.to_hex()),
                "legacy": e.legacy,
                "time": e.result.time.as_str(),
                "passed": e.result.passed,
                "snapshot": e.result.snapshot.to_hex(),
                "snapshot_present": e.snapshot_present,
                "hostname": e.result.hostname,
                "rto_seconds": e.result.rto_seconds,
                "failed_sources": e.result.failed_sources(),
                "error": e.result.error,
            })),
            "stale": max.is_some_and(|m| self.age > m),
        })
    }
}

/// A host and its source names (or paths).
type GroupKey<'a> = (&'a str, Vec<String>);

/// Groups by host and source set, newest last in each; groups sorted by host, then sources.
fn group<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    history: &'a History,
    now: jiff::Timestamp,
) -> Vec<Group<'a>> {
    let mut map: std::collections::BTreeMap<GroupKey<'_>, Vec<&(SnapshotId, Snapshot)>> =
        Default::default();
    for entry in snaps {
        let s = &entry.1;
        let sources = drill_history::source_set(s);
        map.entry((s.hostname.as_str(), sources))
            .or_default()
            .push(entry);
    }
    map.into_iter()
        .filter_map(|((hostname, sources), mut list)| {
            list.sort_by_key(|(_, s)| s.time.timestamp());
            let newest = *list.last()?;
            let mut before: Vec<u64> = list
                .iter()
                .rev()
                .skip(1)
                .take(7)
                .map(|(_, s)| s.summary.total_bytes)
                .collect();
            before.sort_unstable();
            let usual_bytes = before.get(before.len() / 2).copied();
            let last_drill = history.last_of_group(hostname, &sources);
            let last_passed_drill = history
                .entries
                .iter()
                .rev()
                .find(|e| {
                    e.result.passed
                        && e.result.snapshot_hostname == hostname
                        && e.result.snapshot_sources == sources
                })
                .map(|e| e.result.time.as_str());
            Some(Group {
                hostname,
                sources,
                count: list.len(),
                newest,
                age: now.duration_since(newest.1.time.timestamp()),
                usual_bytes,
                last_drill,
                last_passed_drill,
            })
        })
        .collect()
}

fn print_groups(groups: &[Group<'_>], max: Option<jiff::SignedDuration>) -> Result<()> {
    if groups.is_empty() {
        outln!("no snapshots");
        return Ok(());
    }
    for g in groups {
        let (id, s) = g.newest;
        let state = match max {
            Some(m) if g.age > m => "STALE",
            Some(_) => "ok",
            None => "",
        };
        outln!("{} {state}", g.label());
        outln!(
            "  newest    {} at {} ({} ago), {} snapshot(s)",
            id.short(),
            output::local_time(s.time.timestamp()),
            human_age(g.age),
            g.count
        );
        let usual = g
            .usual_bytes
            .map(|u| format!(" (usual {})", output::bytes(u)))
            .unwrap_or_default();
        outln!(
            "  size      {}{usual}",
            output::bytes(s.summary.total_bytes)
        );
        match g.last_drill {
            Some(e) => {
                let r = &e.result;
                let of = format!(
                    "snapshot {}{}",
                    r.snapshot.short(),
                    if e.snapshot_present {
                        ""
                    } else {
                        ", removed since"
                    }
                );
                let rto = r
                    .rto_seconds
                    .map(|s| format!(", restore time {s:.1} s"))
                    .unwrap_or_default();
                if r.passed {
                    outln!(
                        "  drill     passed {} ({of}{rto})",
                        output::local_time(r.time.timestamp())
                    );
                } else {
                    outln!(
                        "  drill     FAILED {} ({of}{rto})",
                        output::local_time(r.time.timestamp())
                    );
                }
            }
            None => outln!("  drill     none recorded (run `coffer drill`)"),
        }
    }
    Ok(())
}

/// Status from the storage listing alone: no password, no decryption.
fn listing_only(ctx: &Context_, args: &Args) -> Result<u8> {
    let location = ctx.global.repo()?;
    let options = ctx.global.storage_options(&ctx.global.options);
    let storage = Storage::open_with(location, OpenMode::Existing, &options)?;
    if storage.size("config")?.is_none() {
        return Err(coffer_repo::Error::NoRepository {
            location: storage.location().to_string(),
        }
        .into());
    }
    let listed = storage.list_with_times("snapshots")?;
    let count = listed.len();
    let newest = listed.iter().map(|(_, _, t)| *t).max();
    let age = newest.map(|t| jiff::Timestamp::now().duration_since(t));
    let stale = match (args.max_age, age) {
        (Some(max), Some(age)) => age > max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if args.json {
        let value = serde_json::json!({
            "mode": "listing",
            "max_age_seconds": args.max_age.map(|a| a.as_secs()),
            "ok": !stale,
            "snapshots": count,
            "newest_written": newest.map(|t| t.to_string()),
            "age_seconds": age.map(|a| a.as_secs()),
            "stale": stale,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else if !ctx.global.quiet || stale {
        match (newest, age) {
            (Some(t), Some(a)) => outln!(
                "{count} snapshot object(s); the newest written {} ({} ago){}",
                output::local_time(t),
                human_age(a),
                if stale { ": STALE" } else { "" }
            ),
            _ => outln!("no snapshot objects"),
        }
        outln!("(from the storage listing only: no password given)");
    }
    if stale {
        match (age, args.max_age) {
            (Some(a), Some(max)) => eprintln!(
                "coffer: the newest snapshot object is {} old, more than --max-age {}",
                human_age(a),
                human_age(max)
            ),
            _ => eprintln!("coffer: the repository holds no snapshot"),
        }
        return Ok(crate::exit::ERROR);
    }
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_print() {
        assert_eq!(parse_age("26h").unwrap().as_secs(), 26 * 3600);
        assert_eq!(parse_age("1d12h").unwrap().as_secs(), 36 * 3600);
        assert_eq!(parse_age("1w").unwrap().as_secs(), 7 * 86_400);
        assert!(parse_age("26").is_err());
        assert!(parse_age("h").is_err());
        assert!(parse_age("0h").is_err());
        assert!(parse_age("5y").is_err());
        assert_eq!(
            human_age(jiff::SignedDuration::from_secs(3 * 86_400 + 7200)),
            "3d 2h"
        );
        assert_eq!(
            human_age(jiff::SignedDuration::from_secs(5 * 3600 + 720)),
            "5h 12m"
        );
        assert_eq!(human_age(jiff::SignedDuration::from_secs(40)), "40s");
    }
}
