//! Backup stage 1, planning: validates the sources, gives each its place in the snapshot's
//! tree, builds the exclude rules and chooses the parent snapshot. Nothing is read or written
//! here except path resolution on the local file system and the snapshot list; the choice of
//! parent among loaded snapshots ([`pick_parent`]) is pure.

use super::{BackupOptions, ParentChoice, Source, SourceInput};
use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::{self, Snapshot, Snapshots};
use crate::repository::Repository;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A path source after validation.
pub(super) struct PathPlan {
    pub(super) name: Option<String>,
    pub(super) absolute: PathBuf,
}

/// A stream-like source after validation, with its place in the tree.
pub(super) struct StreamPlan {
    pub(super) name: Option<String>,
    pub(super) tree_path: PathBuf,
    pub(super) input: SourceInput,
}

/// Every source of one backup, validated and placed.
pub(super) struct Plan {
    /// Path sources, sorted by path, without duplicates.
    pub(super) paths: Vec<PathPlan>,
    pub(super) streams: Vec<StreamPlan>,
    pub(super) excludes: ExcludeRules,
    /// What the snapshot records as its paths: the path sources, then the streams' tree paths.
    pub(super) tree_paths: Vec<PathBuf>,
}

/// Validates `sources` and places them in the tree. Errors of a named source name it; unnamed
/// ones (`coffer backup PATH`) speak for themselves.
pub(super) fn plan(
    sources: Vec<Source>,
    excludes: &[String],
    iexcludes: &[String],
) -> Result<Plan> {
    if sources.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to back up: no paths, streams or sources given".into(),
        ));
    }
    let mut rules = ExcludeRules {
        global: Excludes::new(excludes)?,
        ignoring_case: Excludes::with_case(iexcludes, true)?,
        scoped: Vec::new(),
    };
    let mut paths = Vec::new();
    let mut streams = Vec::new();
    let mut names = BTreeSet::new();
    for source in sources {
        let label = source.label();
        let named = source.name.is_some();
        let attribute = |e: Error| if named { e.in_source(&label) } else { e };
        if let Some(n) = &source.name {
            if !names.insert(n.clone()) {
                return Err(Error::InvalidInput(format!(
                    "source name {n:?} is used twice"
                )));
            }
        }
        let tree_name = match &source.input {
            SourceInput::Path {
                path,
                excludes: own,
            } => {
                let absolute = absolute_path(path).map_err(attribute)?;
                if !own.is_empty() {
                    let own = Excludes::new(own).map_err(attribute)?;
                    rules.scoped.push((absolute.clone(), own));
                }
                paths.push(PathPlan {
                    name: source.name,
                    absolute,
                });
                continue;
            }
            SourceInput::Stream { tree_name, .. } => tree_name.clone(),
            SourceInput::Postgres(pg) => format!(
                "{}/{}.{}",
                source.name.as_deref().unwrap_or("postgres"),
                pg.database,
                pg.format.extension()
            ),
        };
        let tree_path = validate_stream_name(&tree_name).map_err(attribute)?;
        streams.push(StreamPlan {
            name: source.name,
            tree_path,
            input: source.input,
        });
    }
    paths.sort_by(|a, b| a.absolute.cmp(&b.absolute));
    paths.dedup_by(|a, b| a.absolute == b.absolute);
    let absolute: Vec<PathBuf> = paths.iter().map(|p| p.absolute.clone()).collect();
    check_tree_collisions(&absolute, &streams)?;
    let tree_paths = absolute
        .into_iter()
        .chain(streams.iter().map(|s| s.tree_path.clone()))
        .collect();
    Ok(Plan {
        paths,
        streams,
        excludes: rules,
        tree_paths,
    })
}

/// Streams sit at the top of the tree under their own first component; it must not be a
/// path source's first component nor another stream's.
fn check_tree_collisions(paths: &[PathBuf], streams: &[StreamPlan]) -> Result<()> {
    let first = |p: &Path| -> Option<Vec<u8>> {
        p.components().find_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
    };
    if paths.iter().any(|p| first(p).is_none()) && !streams.is_empty() {
        return Err(Error::InvalidInput(
            "backing up / itself cannot be combined with dump or command sources".into(),
        ));
    }
    let mut taken: BTreeMap<Vec<u8>, String> = paths
        .iter()
        .filter_map(|p| Some((first(p)?, p.display().to_string())))
        .collect();
    for s in streams {
        let Some(f) = first(&s.tree_path) else {
            continue;
        };
        if let Some(other) = taken.insert(f, s.tree_path.display().to_string()) {
            return Err(Error::InvalidInput(format!(
                "{} would share its top-level directory with {other} in the snapshot; \
                 rename the source",
                s.tree_path.display()
            )));
        }
    }
    Ok(())
}

/// A stream's name inside the snapshot: relative, `/`-separated, no `.` or `..`.
fn validate_stream_name(name: &str) -> Result<PathBuf> {
    let trimmed = name.trim_start_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if !ok {
        return Err(Error::InvalidInput(format!(
            "stream name {name:?} must be a relative path like db/app.dump, without empty, . or .. parts"
        )));
    }
    Ok(PathBuf::from(format!("/{trimmed}")))
}

/// An absolute, lexically clean path; the last component is kept as is (a symlink stays a
/// symlink), the parent directories are resolved. The path must exist.
fn absolute_path(p: &Path) -> Result<PathBuf> {
    std::fs::symlink_metadata(p).map_err(|e| Error::io("cannot back up", p, e))?;
    let abs = std::path::absolute(p).map_err(|e| Error::io("resolving", p, e))?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    Ok(match (clean.parent(), clean.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map_err(|e| Error::io("resolving", parent, e))?
            .join(name),
        _ => clean,
    })
}

fn same_paths(a: &[String], b: &[PathBuf]) -> bool {
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut b: Vec<String> = b.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    a.sort_unstable();
    b.sort_unstable();
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| *x == y)
}

/// The snapshot whose unchanged files need not be read again, loading the snapshot list unless
/// the choice is [`ParentChoice::None`]. Damaged snapshots are not candidates; they are named in
/// `damage` (which the backup reports as notices).
pub(super) fn choose_parent(
    repo: &Repository,
    opts: &BackupOptions,
    paths: &[PathBuf],
    damage: &mut Vec<super::Notice>,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if opts.parent == ParentChoice::None {
        return Ok(None);
    }
    let all = snapshot::Snapshot::load_all(repo.storage(), repo.keys())?;
    damage.extend(
        all.damaged
            .iter()
            .map(|(id, e)| super::Notice::DamagedSnapshot {
                id: *id,
                reason: e.to_string(),
            }),
    );
    pick_parent(all, &opts.parent, &opts.hostname, paths)
}

/// The parent among `all`: the one named by [`ParentChoice::Id`], or for
/// [`ParentChoice::Auto`] the latest snapshot of the same host with the same set of paths.
pub(super) fn pick_parent(
    all: Snapshots,
    choice: &ParentChoice,
    hostname: &str,
    paths: &[PathBuf],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match choice {
        ParentChoice::None => Ok(None),
        ParentChoice::Id(spec) => Ok(Some(all.resolve(spec)?.clone())),
        ParentChoice::Auto => Ok(all
            .good
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == hostname && same_paths(&s.paths, paths))),
    }
}

/// Excludes for every path source plus those of one source, scoped to its root.
pub(super) struct ExcludeRules {
    global: Excludes,
    /// `--iexclude`: the same rules, letters in either case.
    ignoring_case: Excludes,
    scoped: Vec<(PathBuf, Excludes)>,
}

impl ExcludeRules {
    /// Whether `path` (absolute; a directory when `is_dir`) is left out of the backup.
    pub(super) fn excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.global.excluded(path, is_dir)
            || self.ignoring_case.excluded(path, is_dir)
            || self
                .scoped
                .iter()
                .any(|(root, ex)| path.starts_with(root) && ex.excluded(path, is_dir))
    }
}

/// Compiles exclude `patterns` as a backup does and returns whether they exclude a path: the
/// exclude-pattern parser's public door (the fuzz target `excludes` goes through it).
pub fn exclude_matcher(patterns: &[String]) -> Result<impl Fn(&Path, bool) -> bool> {
    let excludes = Excludes::new(patterns)?;
    Ok(move |path: &Path, is_dir: bool| excludes.excluded(path, is_dir))
}

/// Exclude patterns with restic's semantics. A pattern is matched against the absolute path,
/// component by component (`*`, `?` and `[...]` never cross a `/`; `**` spans any number of
/// components): one that starts with `/` is anchored at the root, any other matches a run of
/// components ending at the path's last one (as if `**/` were in front: `*.log`, `.git`,
/// `docs/*.md`, `gitrepo/.git`). A trailing `/` matches directories only. A directory that
/// matches is left out with everything below it.
struct Excludes {
    any: GlobSet,
    dirs: GlobSet,
}

impl Excludes {
    fn new(patterns: &[String]) -> Result<Excludes> {
        Excludes::with_case(patterns, false)
    }

    /// As [`Excludes::new`]; with `ignore_case`, letters match either case (`--iexclude`).
    fn with_case(patterns: &[String], ignore_case: bool) -> Result<Excludes> {
        let mut any = GlobSetBuilder::new();
        let mut dirs = GlobSetBuilder::new();
        for p in patterns {
            let bad = |why: String| {
                Error::InvalidInput(format!("invalid --exclude pattern {p:?}: {why}"))
            };
            let dir_only = p.ends_with('/');
            let body = p.trim_end_matches('/');
            if body.is_empty() {
                return Err(bad(if p.is_empty() {
                    "empty".into()
                } else {
                    "it would exclude everything".into()
                }));
            }
            let text = if body.starts_with('/') {
                body.to_string()
            } else {
                format!("**/{body}")
            };
            let glob = GlobBuilder::new(&text)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| bad(e.kind().to_string()))?;
            if dir_only {
                dirs.add(glob);
            } else {
                any.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("invalid --exclude: {e}")))
        };
        Ok(Excludes {
            any: build(any)?,
            dirs: build(dirs)?,
        })
    }

    fn excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.any.is_match(path) || (is_dir && self.dirs.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use crate::format::snapshot::{SnapshotTime, Summary};
    use crate::ops::backup::StreamSource;

    fn stream(tree: &str) -> StreamPlan {
        StreamPlan {
            name: Some("s".into()),
            tree_path: validate_stream_name(tree).unwrap(),
            input: SourceInput::Stream {
                tree_name: tree.into(),
                stream: StreamSource::Reader(Box::new(std::io::empty())),
                dump_chunking: true,
            },
        }
    }

    #[test]
    fn streams_may_not_hide_each_other_or_path_sources() {
        let paths = vec![
            PathBuf::from("/opt/app/files"),
            PathBuf::from("/etc/app.env"),
        ];
        assert!(check_tree_collisions(&paths, &[stream("db/app.dump")]).is_ok());
        assert!(check_tree_collisions(&paths, &[stream("db/a.dump"), stream("cache/x")]).is_ok());
        let e = check_tree_collisions(&paths, &[stream("opt/app.dump")]).unwrap_err();
        assert!(e.to_string().contains("/opt/app/files"), "{e}");
        assert!(check_tree_collisions(&[], &[stream("db/a.dump"), stream("db/b.dump")]).is_err());
        assert!(check_tree_collisions(&[PathBuf::from("/")], &[stream("db/a.dump")]).is_err());
    }

    #[test]
    fn stream_names_are_relative_clean_paths() {
        assert_eq!(
            validate_stream_name("db/app.dump").unwrap(),
            PathBuf::from("/db/app.dump")
        );
        for bad in ["", "/", "db//x", "db/../x", "./x", "a\0b"] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scoped_excludes_apply_below_their_source_only() {
        let rules = ExcludeRules {
            global: Excludes::new(&["*.log".into()]).unwrap(),
            ignoring_case: Excludes::with_case(&["*.BAK".into()], true).unwrap(),
            scoped: vec![(
                PathBuf::from("/opt/app/files"),
                Excludes::new(&["*.tmp".into()]).unwrap(),
            )],
        };
        let ex = |p: &str| rules.excluded(Path::new(p), false);
        assert!(ex("/opt/app/files/a.tmp"));
        assert!(!ex("/opt/other/a.tmp"));
        assert!(ex("/opt/other/a.log"));
        assert!(!ex("/opt/app/files/a.txt"));
        assert!(ex("/opt/other/a.bak") && ex("/opt/other/a.Bak"));
    }

    /// restic's exclude semantics, with the examples of its documentation and of issue 18.
    #[test]
    fn patterns_follow_restics_rules() {
        let cases: &[(&str, &str, bool, bool)] = &[
            // (pattern, path, is a directory, excluded)
            ("*.go", "/home/user/foo.go", false, true),
            ("*.go", "/home/user/go/foo.txt", false, false),
            ("*.c", "/src/deep/down/x.c", false, true),
            ("/home/*/.cache", "/home/user/.cache", true, true),
            ("/home/*/.cache", "/srv/home/user/.cache", true, false),
            ("foo/bar", "/home/user/foo/bar", true, true),
            ("foo/bar", "/home/user/foo/barx", true, false),
            ("foo/bar", "/home/user/xfoo/bar", true, false),
            (".git/", "/src/app/.git", true, true),
            (".git/", "/src/app/.git", false, false),
            ("gitrepo/.git", "/src/gitrepo/.git", true, true),
            ("docs/*.md", "/src/docs/a.md", false, true),
            ("docs/*.md", "/src/docs/sub/a.md", false, false),
            ("docs/**/*.md", "/src/docs/sub/deeper/a.md", false, true),
            ("docs/**/*.md", "/src/docs/a.md", false, true),
            ("/var/cache/", "/var/cache", true, true),
            ("/var/cache/", "/srv/var/cache", true, false),
            ("**/node_modules", "/a/b/node_modules", true, true),
            ("node_modules", "/node_modules", true, true),
            ("/srv/*/cache", "/srv/app/cache", true, true),
            // `*` does not cross a `/`.
            ("/srv/*/cache", "/srv/app/deep/cache", true, false),
            ("*.swp", "/home/u/.notes.swp", false, true),
            ("*.swp", "/home/u/cache", false, false),
            ("[ab].txt", "/x/a.txt", false, true),
            ("[ab].txt", "/x/c.txt", false, false),
            ("?.txt", "/x/ab.txt", false, false),
        ];
        for &(pattern, path, is_dir, want) in cases {
            let ex = Excludes::new(&[pattern.to_string()]).unwrap();
            assert_eq!(
                ex.excluded(Path::new(path), is_dir),
                want,
                "{pattern:?} against {path:?} (directory: {is_dir})"
            );
        }
        let insensitive = Excludes::with_case(&["*.JPG".into()], true).unwrap();
        assert!(insensitive.excluded(Path::new("/p/a.jpg"), false));
        assert!(!Excludes::new(&["*.JPG".into()])
            .unwrap()
            .excluded(Path::new("/p/a.jpg"), false));
        for bad in ["a[", "", "/", "//"] {
            let e = Excludes::new(&[bad.into()]).err().unwrap();
            assert!(e.to_string().contains("invalid --exclude pattern"), "{e}");
        }
    }

    #[test]
    fn planning_sorts_dedups_and_places_every_source() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        for name in ["b", "a"] {
            std::fs::write(base.join(name), b"x").unwrap();
        }
        let named_stream = Source {
            name: Some("db".into()),
            input: SourceInput::Stream {
                tree_name: "db/app.dump".into(),
                stream: StreamSource::Reader(Box::new(std::io::empty())),
                dump_chunking: true,
            },
        };
        let sources = vec![
            Source::path(base.join("b")),
            Source::path(base.join("a")),
            Source::path(base.join("b")),
            named_stream,
        ];
        let placed = plan(sources, &[], &[]).unwrap();
        let paths: Vec<&Path> = placed.paths.iter().map(|p| p.absolute.as_path()).collect();
        assert_eq!(paths, [base.join("a"), base.join("b")]);
        assert_eq!(
            placed.tree_paths,
            [
                base.join("a"),
                base.join("b"),
                PathBuf::from("/db/app.dump")
            ]
        );
        assert_eq!(placed.streams.len(), 1);
        assert!(plan(Vec::new(), &[], &[]).is_err());
        let twice = |n: &str| Source {
            name: Some(n.into()),
            ..Source::path(base.join("a"))
        };
        let e = plan(vec![twice("x"), twice("x")], &[], &[]).err().unwrap();
        assert!(e.to_string().contains("used twice"), "{e}");
        let missing = Source {
            name: Some("files".into()),
            ..Source::path(base.join("missing"))
        };
        let e = plan(vec![missing], &[], &[]).err().unwrap();
        assert!(e.to_string().contains("files"), "{e}");
    }

    fn snap(host: &str, paths: &[&str], second: i64) -> (SnapshotId, Snapshot) {
        let time = jiff::Timestamp::from_second(1_800_000_000 + second)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC);
        let snapshot = Snapshot {
            time: SnapshotTime::from_zoned(&time),
            tree: BlobId([0; 32]),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            hostname: host.into(),
            username: String::new(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            parent: None,
            excludes: Vec::new(),
            program_version: String::new(),
            key_id: String::new(),
            summary: Summary::default(),
            sources: Vec::new(),
            original: None,
            copied_from: None,
        };
        let mut id = [0u8; 32];
        id[0] = u8::try_from(second).unwrap();
        (SnapshotId(id), snapshot)
    }

    #[test]
    fn the_parent_is_the_latest_snapshot_of_the_same_host_and_paths() {
        let all = || Snapshots {
            good: vec![
                snap("web", &["/srv", "/etc"], 1),
                snap("web", &["/etc", "/srv"], 2),
                snap("db", &["/etc", "/srv"], 3),
                snap("web", &["/srv"], 4),
            ],
            damaged: Vec::new(),
        };
        let paths = [PathBuf::from("/srv"), PathBuf::from("/etc")];
        let auto = pick_parent(all(), &ParentChoice::Auto, "web", &paths).unwrap();
        // Paths compare as a set; other hosts and other path sets do not count.
        assert_eq!(auto.map(|(id, _)| id.0[0]), Some(2));
        let none = pick_parent(all(), &ParentChoice::Auto, "mail", &paths).unwrap();
        assert!(none.is_none());
        assert!(pick_parent(all(), &ParentChoice::None, "web", &paths)
            .unwrap()
            .is_none());
        let by_id = ParentChoice::Id(snap("", &[], 3).0.to_hex());
        let chosen = pick_parent(all(), &by_id, "web", &paths).unwrap();
        assert_eq!(chosen.map(|(_, s)| s.hostname), Some("db".to_string()));
        let unknown = ParentChoice::Id("ffffffff".into());
        assert!(pick_parent(all(), &unknown, "web", &paths).is_err());
    }
}
