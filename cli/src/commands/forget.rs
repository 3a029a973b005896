//! `coffer forget`: apply a retention policy; say for every snapshot why it is kept or removed.

use super::prune::PruneFlags;
use super::Context_;
use anyhow::{Context, Result};
use coffer_repo::ops::forget::{self as op, ForgetOptions, ForgetReport};
use coffer_repo::retention::{GroupBy, KeepCount, KeepWithin, Policy};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  coffer forget --keep-within 30d --keep-tag release --timezone Europe/Berlin --prune
  coffer forget 3f2a9c01     # remove this one snapshot (also one that cannot be read)

Snapshots are grouped (default by host and paths) and each group is decided on its own. Counts \
take a number, or `all` for every bucket. A snapshot kept by any rule is kept; every rule that \
keeps it is shown (e.g. `daily 3/7, weekly 1/4`). With no keep rule (in the flags or the config's [retention]), forget refuses to run. \
Buckets are computed in --timezone (default: this machine's zone), DST-correct. See \
docs/retention.md.")]
pub struct Args {
    /// Remove exactly these snapshots (full ids or unique prefixes of 4+ hex digits) instead of
    /// applying a policy; works for a snapshot that cannot be read
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent hours that have one
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent days that have one
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent ISO weeks that have one
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent months that have one
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent years that have one
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<KeepCount>,
    /// Keep every snapshot within DURATION of the group's newest (e.g. 30d, 2w, 1y6m, 12h)
    #[arg(long, value_name = "DURATION", value_parser = parse_within)]
    pub keep_within: Option<KeepWithin>,
    /// Keep every snapshot with this tag (repeatable: any of them)
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Group by any of host, paths, tags, label:KEY (comma-separated; "" for no grouping)
    #[arg(long, value_name = "LIST", value_parser = parse_group_by)]
    pub group_by: Option<GroupBy>,
    /// Compute days, weeks, months in this IANA time zone (default: the local zone)
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Show the decisions; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_flags: PruneFlags,
    /// Print the decisions as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_count(s: &str) -> Result<KeepCount, String> {
    s.parse().map_err(|e: coffer_repo::Error| e.to_string())
}

fn parse_within(s: &str) -> Result<KeepWithin, String> {
    s.parse().map_err(|e: coffer_repo::Error| e.to_string())
}

fn parse_group_by(s: &str) -> Result<GroupBy, String> {
    s.parse().map_err(|e: coffer_repo::Error| e.to_string())
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    if !args.ids.is_empty() {
        return forget_ids(ctx, &args);
    }
    let flags = Policy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args.keep_within,
        tags: args.keep_tag.clone(),
    };
    // Keep rules come from the flags when any is given, else from the config's [retention]
    // (flags > config file); the time zone and grouping likewise, one by one.
    let retention = ctx
        .config
        .as_ref()
        .and_then(|c| c.config.retention.as_ref());
    let (policy, config_zone, config_group) = match retention {
        Some(r) if flags.is_empty() => (
            policy_from_config(r)?,
            r.timezone.clone(),
            r.group_by.as_ref().map(|keys| keys.join(",")),
        ),
        Some(r) => (
            flags,
            r.timezone.clone(),
            r.group_by.as_ref().map(|keys| keys.join(",")),
        ),
        None => (flags, None, None),
    };
    // Refused before the password is asked for or anything is read.
    policy
        .validate()
        .map_err(|e| crate::exit::usage(e.to_string()))?;
    let timezone = match args.timezone.clone().or(config_zone) {
        Some(name) => jiff::tz::TimeZone::get(&name)
            .map_err(|e| crate::exit::usage(format!("time zone {name:?}: {e}")))?,
        None => jiff::tz::TimeZone::system(),
    };
    let group_by = match (&args.group_by, config_group) {
        (Some(g), _) => g.clone(),
        (None, Some(keys)) => parse_group_by(&keys).map_err(crate::exit::usage)?,
        (None, None) => GroupBy::default(),
    };
    // Forget needs only the snapshots, and prune loads the index itself after listing them
    // (the order its safety argument needs): loading it at open as well only cost time.
    let repo = super::open_repo_with(ctx, coffer_repo::Repository::open_without_index)?;
    // Printed as soon as forget is done, while prune goes on.
    let forget = || {
        let report = op::forget(
            &repo,
            &ForgetOptions {
                policy,
                group_by,
                timezone,
                dry_run: args.dry_run,
            },
        )?;
        let printed = if args.json {
            Ok(())
        } else {
            print(ctx, &report)
        };
        Ok((report, printed))
    };
    let (report, pruned) = if args.prune && !args.dry_run {
        let ((report, printed), pruned) =
            super::prune::prune_after_forget(ctx, &repo, &args.prune_flags, args.json, forget)?;
        printed?;
        let pruned = pruned.context("the snapshots were forgotten, but prune failed")?;
        (report, Some(pruned))
    } else {
        let (report, printed) = forget()?;
        printed?;
        (report, None)
    };
    if args.json {
        let value = match pruned {
            Some(p) => serde_json::json!({ "forget": report, "prune": p }),
            None => serde_json::to_value(&report)?,
        };
        outln!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(crate::exit::OK)
}

/// `coffer forget ID...`: removes the named snapshots, readable or not.
fn forget_ids(ctx: &Context_, args: &Args) -> Result<u8> {
    let policy_flags = args.keep_last.is_some()
        || args.keep_hourly.is_some()
        || args.keep_daily.is_some()
        || args.keep_weekly.is_some()
        || args.keep_monthly.is_some()
        || args.keep_yearly.is_some()
        || args.keep_within.is_some()
        || !args.keep_tag.is_empty()
        || args.group_by.is_some();
    if policy_flags {
        return Err(crate::exit::usage(
            "give snapshot ids or keep rules, not both",
        ));
    }
    let repo = super::open_repo_with(ctx, coffer_repo::Repository::open_without_index)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    // Printed as soon as forget is done, while prune goes on.
    let forget = || {
        let removed = op::forget_ids(&repo, &args.ids, args.dry_run)?;
        let printed = (|| -> Result<()> {
            if args.json {
                let value = serde_json::json!({ "dry_run": args.dry_run, "removed": removed });
                if !args.prune || args.dry_run {
                    outln!("{}", serde_json::to_string_pretty(&value)?);
                }
            } else if !ctx.global.quiet {
                for id in &removed {
                    outln!("{verb} snapshot {id}");
                }
            }
            Ok(())
        })();
        Ok((removed, printed))
    };
    if !args.prune || args.dry_run {
        let (_, printed) = forget()?;
        return printed.map(|()| crate::exit::OK);
    }
    let ((removed, printed), pruned) =
        super::prune::prune_after_forget(ctx, &repo, &args.prune_flags, args.json, forget)?;
    printed?;
    let p = pruned.context("the snapshots were forgotten, but prune failed")?;
    if args.json {
        let value = serde_json::json!({ "forget": { "removed": removed }, "prune": p });
        outln!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(crate::exit::OK)
}

/// The `[retention]` table of the config file as a policy.
fn policy_from_config(r: &crate::config::Retention) -> Result<Policy> {
    let count = |n: Option<u32>| n.map(KeepCount::N);
    let within = match &r.keep_within {
        Some(w) => Some(parse_within(w).map_err(crate::exit::usage)?),
        None => None,
    };
    Ok(Policy {
        last: count(r.keep_last),
        hourly: count(r.keep_hourly),
        daily: count(r.keep_daily),
        weekly: count(r.keep_weekly),
        monthly: count(r.keep_monthly),
        yearly: count(r.keep_yearly),
        within,
        tags: r.keep_tags.clone(),
    })
}

fn print(ctx: &Context_, r: &ForgetReport) -> anyhow::Result<()> {
    let (mut kept, mut removed) = (0, 0);
    for group in &r.groups {
        if !ctx.global.quiet {
            // A group key names hosts, tags and paths: shown escaped.
            let key = if group.key.is_empty() {
                "all snapshots".into()
            } else {
                crate::escape::message(&group.key)
            };
            outln!("{key}:");
        }
        for v in &group.snapshots {
            if v.keep {
                kept += 1;
            } else {
                removed += 1;
            }
            if ctx.global.quiet {
                continue;
            }
            let action = match (v.keep, r.dry_run) {
                (true, _) => "keep",
                (false, true) => "would remove",
                (false, false) => "remove",
            };
            outln!(
                "  {action:<12}  {}  {:<25}  {}",
                v.id.short(),
                crate::escape::name(v.time.get(..25).unwrap_or(&v.time)),
                crate::escape::message(&v.reasons.join(", "))
            );
        }
    }
    for (id, why) in &r.damaged {
        eprintln!(
            "warning: {}; kept, since retention cannot judge it (remove it with \
             `coffer forget {id}`)",
            crate::escape::message(why)
        );
    }
    if !ctx.global.quiet {
        let verb = if r.dry_run {
            "would be removed"
        } else {
            "removed"
        };
        outln!(
            "{} ({}): {kept} kept, {removed} {verb}",
            r.policy,
            r.timezone
        );
    }
    Ok(())
}
