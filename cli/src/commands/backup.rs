//! `coffer backup`: paths, standard input, a command's output, or the configuration's named
//! sources (database, uploads, `.env`) into one snapshot.

use super::Context_;
use crate::output;
use anyhow::{Context, Result};
use coffer_repo::format::id::SnapshotId;
use coffer_repo::ops::backup::{
    self as op, BackupOptions, ParentChoice, Source, SourceInput, StreamSource,
};
use coffer_repo::Error;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer backup                      (every source of ./coffer.toml or --config, one snapshot)
  coffer backup --manifest /opt/app/backup/latest.manifest.json --label app_version=2.3.1
  coffer backup /opt/app/data /opt/app/.env --tag nightly
  pg_dump -Fc -Z0 app | coffer backup --stdin-name db/app.dump
  coffer backup --stdin-from-command db/app.dump -- pg_dump -Fc -Z0 app

With --stdin-from-command, a command that exits non-zero saves no snapshot and coffer exits 1.")]
pub struct Args {
    /// Files and directories to back up
    pub paths: Vec<PathBuf>,
    /// Leave out what matches PATTERN (restic's rules: `*.log`, `.git/`, `docs/*.md`,
    /// `/var/cache/`; a leading `/` anchors at the root, a trailing `/` means directories)
    #[arg(long, short = 'e', value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// As --exclude, letters matching in either case
    #[arg(long, value_name = "PATTERN")]
    pub iexclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line (blank lines and lines starting with `#`
    /// are ignored)
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Store a directory holding a file named NAME with that file only
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Store a directory holding a valid CACHEDIR.TAG with the tag only
    #[arg(long)]
    pub exclude_caches: bool,
    /// Do not cross into other file systems (a mount point is stored as an empty directory)
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up the paths listed in FILE, one per line (blank lines and lines starting with `#`
    /// are ignored; repeatable)
    #[arg(long, value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Back up the paths listed in FILE, one per line taken as it is (only empty lines skipped)
    #[arg(long, value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// Back up the paths listed in FILE, separated by NUL bytes (`find -print0`)
    #[arg(long, value_name = "FILE")]
    pub files_from_raw: Vec<PathBuf>,
    /// Leave out files larger than SIZE (bytes, or with K, M, G, T: powers of 1024)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Tag the snapshot (repeatable)
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Label the snapshot with KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_label)]
    pub label: Vec<(String, String)>,
    /// Import labels from a manifest: a JSON object or key=value lines (repeatable)
    #[arg(long, value_name = "FILE")]
    pub manifest: Vec<PathBuf>,
    /// Hostname recorded in the snapshot (default: this machine's)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Record the snapshot at this time (RFC 3339, e.g. 2026-01-31T02:00:00+01:00)
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// Store standard input as the file NAME (e.g. db/app.dump)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["paths", "stdin_from_command"])]
    pub stdin_name: Option<String>,
    /// Run the command after `--` and store its output as the file NAME
    #[arg(
        long,
        value_name = "NAME",
        requires = "command",
        conflicts_with = "paths"
    )]
    pub stdin_from_command: Option<String>,
    /// Compare with this snapshot to skip unchanged files (default: latest of same host and paths)
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "force")]
    pub parent: Option<String>,
    /// Read every file, ignoring the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Leave out extended attributes, ACLs and file capabilities
    #[arg(long)]
    pub no_xattrs: bool,
    /// Create the repository first if there is none
    #[arg(long, conflicts_with = "dry_run")]
    pub init: bool,
    /// Read and chunk everything, then list each file (new, modified or unchanged) and what
    /// would be added, writing nothing: no data, no index, no snapshot, no hooks, no
    /// notifications
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the snapshot as JSON
    #[arg(long)]
    pub json: bool,
    /// Exit 1 (after saving) when the backup looks wrong: `anomaly` (a source much smaller or
    /// larger than its recent history, or rows gone; thresholds in `[anomaly]`)
    #[arg(long, value_name = "WHAT", value_enum)]
    pub fail_on: Vec<FailOn>,
    /// The command for --stdin-from-command
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What `--fail-on` turns into exit 1.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    Anomaly,
}

fn parse_time(s: &str) -> Result<jiff::Zoned> {
    if let Ok(z) = s.parse::<jiff::Zoned>() {
        return Ok(z);
    }
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| crate::exit::usage(format!("--time {s:?} is not an RFC 3339 time: {e}")))?;
    Ok(ts.to_zoned(jiff::tz::TimeZone::system()))
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    // [hooks]: before-backup right before anything is saved, after-backup once it started.
    // A dry run saves nothing, so it runs no hooks.
    if args.dry_run {
        return save(ctx, &args, None);
    }
    let mut hooks = crate::hooks::Hooks::new(ctx, "backup");
    let outcome = save(ctx, &args, Some(&mut hooks));
    hooks.after(outcome)
}

/// The backup itself; runs the before-backup hook right before saving.
fn save(
    ctx: &Context_,
    args: &Args,
    mut hooks: Option<&mut crate::hooks::Hooks<'_>>,
) -> Result<u8> {
    let sources = sources(ctx, args)?;
    let config = ctx.config.as_ref().map(|l| &l.config);
    // Labels: the config's defaults, then manifests, then --label (later wins).
    let mut labels = config.map(|c| c.labels.clone()).unwrap_or_default();
    for file in &args.manifest {
        let bytes = std::fs::read(file)
            .with_context(|| format!("reading the manifest {}", file.display()))?;
        let imported = coffer_repo::sources::manifest_labels(&file.display().to_string(), &bytes)?;
        labels.extend(imported);
    }
    labels.extend(args.label.iter().cloned());
    let mut tags = config.map(|c| c.tags.clone()).unwrap_or_default();
    tags.extend(args.tag.iter().cloned());
    let mut excludes = config.map(|c| c.excludes.clone()).unwrap_or_default();
    excludes.extend(args.exclude.iter().cloned());
    for file in &args.exclude_file {
        excludes.extend(read_exclude_file(file)?);
    }
    let hostname = args
        .host
        .clone()
        .or_else(|| config.and_then(|c| c.hostname.clone()))
        .unwrap_or_else(super::hostname);
    let time = args.time.as_deref().map(parse_time).transpose()?;
    let repo = match super::open_repo(ctx) {
        Err(e)
            if args.init
                && matches!(e.downcast_ref::<Error>(), Some(Error::NoRepository { .. })) =>
        {
            super::init::create(ctx, &super::init::Args::default())?
        }
        other => other?,
    };
    let parent = match (&args.parent, args.force) {
        (Some(p), _) => ParentChoice::Id(p.clone()),
        (None, true) => ParentChoice::None,
        (None, false) => ParentChoice::Auto,
    };
    let names: Vec<String> = sources.iter().filter_map(|s| s.name.clone()).collect();
    if let Some(hooks) = hooks.as_deref_mut() {
        hooks.set("COFFER_SOURCES", names.join(" "));
        hooks.before()?;
    }
    let options = BackupOptions {
        sources,
        excludes,
        tags,
        labels,
        hostname,
        username: super::username(),
        time,
        parent,
        cancel: ctx.cancel.clone(),
        workers: 0,
        no_xattrs: args.no_xattrs,
        selection: op::Selection {
            iexcludes: args.iexclude.clone(),
            exclude_if_present: args.exclude_if_present.clone(),
            exclude_caches: args.exclude_caches,
            one_file_system: args.one_file_system,
            exclude_larger_than: args.exclude_larger_than,
        },
        progress: Default::default(),
        anomalies: crate::anomaly::check_for(ctx, &repo),
        dry_run: args.dry_run,
    };
    let shown = crate::progress::start(ctx, args.json, "backup", options.progress.clone())?;
    let report = op::backup(&repo, options);
    shown.finish();
    let report = report.context("backup failed")?;
    let Some(id) = report.id else {
        return print_dry_run(ctx, args, &report);
    };
    if let Some(hooks) = hooks {
        hooks.set("COFFER_SNAPSHOT_ID", id.to_hex());
    }
    for w in &report.warnings {
        eprintln!("warning: {}", crate::escape::message(&w.to_string()));
    }
    // Notices are advice, not trouble: `-q` leaves them out (the JSON still carries them).
    if !ctx.global.quiet {
        for n in &report.notices {
            eprintln!("notice: {}", crate::escape::message(&n.to_string()));
        }
    }
    let s = &report.snapshot;
    report_details(ctx, &id, &report);
    let anomalies = crate::anomaly::after_backup(ctx, &report);
    if args.json {
        let value = serde_json::json!({
            "id": id,
            "snapshot": s,
            "warnings": report.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "notices": report.notices.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "anomalies": anomalies,
        });
        outln!("{}", crate::progress::summary_line(value));
    } else if !ctx.global.quiet {
        print_summary(&id, &report)?;
    }
    if !anomalies.is_empty() && args.fail_on.contains(&FailOn::Anomaly) {
        eprintln!(
            "coffer: snapshot {} was saved, but it looks wrong ({} anomaly warning(s)); exit 1 \
             because of --fail-on anomaly",
            id.short(),
            anomalies.len()
        );
        return Ok(crate::exit::ERROR);
    }
    if report.warnings.is_empty() {
        return Ok(crate::exit::OK);
    }
    let left_out = report.warnings.iter().filter(|w| w.step.left_out()).count();
    let xattrs = report
        .warnings
        .iter()
        .filter(|w| w.step == op::Step::Xattr)
        .count();
    let changed = report.warnings.len() - left_out - xattrs;
    if left_out > 0 {
        eprintln!(
            "warning: {left_out} source file(s) could not be read and are not in the snapshot"
        );
    }
    if xattrs > 0 {
        eprintln!(
            "warning: {xattrs} source file(s) are stored without some of their extended \
             attributes (listed above)"
        );
    }
    if changed > 0 {
        eprintln!(
            "warning: {changed} source file(s) kept changing while being read and are stored as \
             read (possibly a mix of old and new contents)"
        );
    }
    Ok(crate::exit::PARTIAL)
}

/// What to back up: a stream (`--stdin-name`, `--stdin-from-command`), the paths given, or the
/// config file's `[sources]`.
fn sources(ctx: &Context_, args: &Args) -> Result<Vec<Source>> {
    let stream = if let Some(name) = &args.stdin_name {
        Some(SourceInput::Stream {
            tree_name: name.clone(),
            stream: StreamSource::Reader(Box::new(std::io::stdin())),
            dump_chunking: false,
        })
    } else if let Some(name) = &args.stdin_from_command {
        let (program, rest) = args
            .command
            .split_first()
            .ok_or_else(|| crate::exit::usage("--stdin-from-command needs a command after --"))?;
        Some(SourceInput::Stream {
            tree_name: name.clone(),
            stream: StreamSource::Command {
                program: program.clone(),
                args: rest.to_vec(),
            },
            dump_chunking: false,
        })
    } else {
        None
    };
    if !args.command.is_empty() && args.stdin_from_command.is_none() {
        return Err(crate::exit::usage(
            "a command after -- needs --stdin-from-command NAME",
        ));
    }
    let mut paths = args.paths.clone();
    for file in &args.files_from {
        paths.extend(read_list(file, List::Lines)?);
    }
    for file in &args.files_from_verbatim {
        paths.extend(read_list(file, List::Verbatim)?);
    }
    for file in &args.files_from_raw {
        paths.extend(read_list(file, List::Nul)?);
    }
    let listed = !args.files_from.is_empty()
        || !args.files_from_verbatim.is_empty()
        || !args.files_from_raw.is_empty();
    if listed && paths.is_empty() {
        return Err(crate::exit::usage(
            "the --files-from lists name no paths: nothing to back up",
        ));
    }
    Ok(if let Some(input) = stream {
        vec![Source { name: None, input }]
    } else if !paths.is_empty() {
        paths.iter().map(Source::path).collect()
    } else {
        match &ctx.config {
            Some(loaded) if !loaded.config.sources.is_empty() => {
                crate::config::backup_sources(loaded)?
            }
            _ => {
                return Err(crate::exit::usage(
                    "nothing to back up: give paths, --stdin-name or --stdin-from-command, \
                     or define [sources] in the config file (docs/config.md)",
                ))
            }
        }
    })
}

/// The snapshot id, per-source statistics, summary and warnings, for the notification body.
fn report_details(ctx: &Context_, id: &SnapshotId, report: &op::BackupReport) {
    let s = &report.snapshot;
    ctx.report("snapshot_id", id.to_hex().into());
    ctx.report(
        "sources",
        serde_json::to_value(&s.sources).unwrap_or_default(),
    );
    ctx.report("paths", serde_json::to_value(&s.paths).unwrap_or_default());
    ctx.report(
        "summary",
        serde_json::to_value(&s.summary).unwrap_or_default(),
    );
    let warnings: Vec<String> = report
        .warnings
        .iter()
        .map(ToString::to_string)
        .chain(report.notices.iter().map(ToString::to_string))
        .collect();
    ctx.report("warnings", warnings.into());
}

/// The human summary of a saved snapshot (stdout).
fn print_summary(id: &SnapshotId, report: &op::BackupReport) -> Result<()> {
    let s = &report.snapshot;
    let m = &s.summary;
    outln!("snapshot {} saved", id.short());
    outln!("  time      {}", crate::escape::name(&s.time));
    outln!("  paths     {}", crate::escape::names(&s.paths, " "));
    outln!(
        "  files     {} ({} unchanged), {} dirs, {} symlinks, {}",
        m.files,
        m.files_unchanged,
        m.dirs,
        m.symlinks,
        output::bytes(m.total_bytes)
    );
    if m.special_files > 0 {
        outln!("  special   {} FIFOs and device nodes", m.special_files);
    }
    outln!(
        "  added     {} stored ({} before compression) in {} new blobs, {} packs",
        output::bytes(m.added_stored_bytes),
        output::bytes(m.added_raw_bytes),
        m.data_blobs_new + m.tree_blobs_new,
        m.packs_written
    );
    outln!("  duration  {:.2} s", m.duration_seconds);
    if let Some(p) = &s.parent {
        outln!("  parent    {}", p.short());
    }
    for source in &s.sources {
        print!(
            "  source    {} ({}) at {}",
            crate::escape::name(&source.name),
            crate::escape::name(&source.kind),
            crate::escape::name(&source.tree_path)
        );
        if let Some(pg) = &source.postgres {
            print!(
                ": database {}, server {}, {} TOC entries, {} tables",
                crate::escape::name(&pg.database),
                crate::escape::name(&pg.server_version),
                pg.toc_entries,
                pg.tables.len()
            );
        }
        if let Some(st) = &source.stream {
            print!(
                ", {} in {:.2} s",
                output::bytes(st.bytes),
                st.duration_seconds
            );
        }
        outln!();
    }
    Ok(())
}

/// What a dry run found: each file and stream with its size and change (`new`, `modified`,
/// `unchanged`), then the totals and what a real run would add; warnings as a real run gives
/// them, and its exit code (3 when some file could not be read).
fn print_dry_run(ctx: &Context_, args: &Args, report: &op::BackupReport) -> Result<u8> {
    let m = &report.snapshot.summary;
    for w in &report.warnings {
        eprintln!("warning: {}", crate::escape::message(&w.to_string()));
    }
    if args.json {
        let files: Vec<serde_json::Value> = report
            .listed
            .iter()
            .map(|l| {
                serde_json::json!({
                    "path": crate::escape::path(&l.path),
                    "size": l.size,
                    "change": l.change.as_str(),
                })
            })
            .collect();
        let value = serde_json::json!({
            "dry_run": true,
            "files": files,
            "summary": m,
            "warnings": report.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "notices": report.notices.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        outln!("{}", crate::progress::summary_line(value));
    } else if !ctx.global.quiet {
        for l in &report.listed {
            outln!(
                "{:<9} {} {}",
                l.change.as_str(),
                crate::escape::path(&l.path),
                output::bytes(l.size)
            );
        }
        outln!(
            "dry run: {} files ({} unchanged), {} dirs, {} symlinks, {}",
            m.files,
            m.files_unchanged,
            m.dirs,
            m.symlinks,
            output::bytes(m.total_bytes)
        );
        outln!(
            "would add {} stored ({} before compression) in {} new blobs; nothing was written",
            output::bytes(m.added_stored_bytes),
            output::bytes(m.added_raw_bytes),
            m.data_blobs_new + m.tree_blobs_new
        );
    }
    let left_out = report.warnings.iter().any(|w| w.step.left_out());
    Ok(if left_out {
        crate::exit::PARTIAL
    } else {
        crate::exit::OK
    })
}

/// The patterns of an `--exclude-file`: one per line, blank lines and `#` comments ignored,
/// trailing spaces kept (a name may end in one) but a trailing `\r` dropped.
fn read_exclude_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the exclude file {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// How a `--files-from*` list separates its paths.
#[derive(Clone, Copy)]
enum List {
    /// Lines; blank ones and `#` comments skipped, a trailing `\r` dropped.
    Lines,
    /// Lines taken as they are (names may start with `#` or end in spaces); empty ones skipped.
    Verbatim,
    /// NUL-separated, any bytes but NUL in a name.
    Nul,
}

/// The paths a `--files-from*` file lists (`-` is standard input).
fn read_list(path: &std::path::Path, how: List) -> Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = if path == std::path::Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .context("reading the path list from standard input")?;
        b
    } else {
        std::fs::read(path).with_context(|| format!("reading the path list {}", path.display()))?
    };
    let separator = if matches!(how, List::Nul) { 0 } else { b'\n' };
    Ok(bytes
        .split(|&b| b == separator)
        .map(|entry| match how {
            List::Lines => entry.strip_suffix(b"\r").unwrap_or(entry),
            _ => entry,
        })
        .filter(|entry| match how {
            List::Lines => {
                let text = String::from_utf8_lossy(entry);
                !text.trim().is_empty() && !text.trim_start().starts_with('#')
            }
            _ => !entry.is_empty(),
        })
        .map(|entry| PathBuf::from(std::ffi::OsStr::from_bytes(entry)))
        .collect())
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024, as restic).
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let factor: u64 = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("{s:?} is not a size such as 500K, 100M or 2G")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{s:?} is not a size such as 500K, 100M or 2G"))
}

#[cfg(test)]
mod selection_tests {
    use super::*;

    #[test]
    fn sizes_read_as_restic_reads_them() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert_eq!(parse_size("5M"), Ok(5 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("3T"), Ok(3 << 40));
        for bad in ["", "M", "1X", "-1", "99999999999999999999", "1.5G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_lists_in_their_three_forms() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("list");
        std::fs::write(&f, "# comment\n/a b\r\n\n/#c \n").unwrap();
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(read_list(&f, List::Lines).unwrap(), p(&["/a b", "/#c "]));
        assert_eq!(
            read_list(&f, List::Verbatim).unwrap(),
            p(&["# comment", "/a b\r", "/#c "])
        );
        std::fs::write(&f, b"/x\ny\0/z\0\0").unwrap();
        assert_eq!(read_list(&f, List::Nul).unwrap(), p(&["/x\ny", "/z"]));
        assert!(read_list(&dir.path().join("absent"), List::Lines).is_err());
    }

    #[test]
    fn exclude_files_skip_blanks_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("excludes");
        std::fs::write(
            &f,
            "# caches\n*.tmp\r\n\n  \n/var/cache/\nname with space \n",
        )
        .unwrap();
        assert_eq!(
            read_exclude_file(&f).unwrap(),
            ["*.tmp", "/var/cache/", "name with space "]
        );
        let e = read_exclude_file(&dir.path().join("absent")).unwrap_err();
        assert!(
            format!("{e:#}").contains("reading the exclude file"),
            "{e:#}"
        );
    }
}
