//! Everything a file system holds (issue 18): FIFOs and device nodes are stored and restored
//! (devices only by a restore that may create them, else a warning and exit 3), sockets are
//! skipped with a notice and exit 0; the compressed-dump notice only for real dumps, never
//! under `-q`. Real files, the real binary.

use coffer_e2e::Env;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[track_caller]
fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// What of a special file a restore must bring back.
fn shape(path: &Path) -> (String, u32, u64, i64, i64, u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let kind = if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else {
        "other"
    };
    let rdev = if ft.is_fifo() { 0 } else { m.rdev() };
    (
        kind.into(),
        m.mode() & 0o7777,
        rdev,
        m.mtime(),
        m.mtime_nsec(),
        m.uid(),
        m.gid(),
    )
}

/// A source with a FIFO, a socket and (as root) a character and a block device.
fn special_tree(env: &Env) -> (std::path::PathBuf, std::os::unix::net::UnixListener) {
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("plain"), b"plain file").unwrap();
    let fifo = src.join("fifo");
    run("mkfifo", &["-m", "0640", fifo.to_str().unwrap()]);
    if is_root() {
        run(
            "mknod",
            &[
                "-m",
                "0620",
                src.join("null").to_str().unwrap(),
                "c",
                "1",
                "3",
            ],
        );
        run(
            "mknod",
            &[
                "-m",
                "0600",
                src.join("loop").to_str().unwrap(),
                "b",
                "7",
                "200",
            ],
        );
        run("chown", &["1234:5678", src.join("null").to_str().unwrap()]);
    }
    let socket = std::os::unix::net::UnixListener::bind(src.join("agent.sock")).unwrap();
    (src, socket)
}

#[test]
fn fifos_and_devices_are_restored_and_sockets_skipped_with_a_notice() {
    let env = Env::new();
    env.init();
    let (src, _socket) = special_tree(&env);
    let out = env.run(&["backup", src.to_str().unwrap()]).ok();
    // The socket is named in a notice, not a warning; the backup is complete (exit 0).
    assert!(
        out.stderr.contains("agent.sock: a socket, not stored"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("warning:"), "{}", out.stderr);
    let specials = if is_root() { 3 } else { 1 };
    assert!(
        out.stdout
            .contains(&format!("special   {specials} FIFOs and device nodes")),
        "{}",
        out.stdout
    );
    // -q: not even the notice.
    let quiet = env.run(&["-q", "backup", src.to_str().unwrap()]).ok();
    assert_eq!(quiet.stderr, "", "-q printed: {}", quiet.stderr);

    let ls = env.run(&["ls", "latest"]).ok().stdout;
    let line = |name: &str| {
        ls.lines()
            .find(|l| l.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{ls}"))
            .to_string()
    };
    assert!(line("fifo").starts_with("prw-r-----"), "{ls}");
    assert!(!ls.contains("agent.sock"), "{ls}");
    if is_root() {
        assert!(
            line("null").starts_with("crw--w----   1  1234/5678"),
            "{ls}"
        );
        assert!(line("null").contains(" 1, 3  "), "{ls}");
        assert!(line("loop").starts_with("brw-------"), "{ls}");
    }

    let target = env.path("restored");
    let out = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert!(!out.stderr.contains("warning:"), "{}", out.stderr);
    let back = target.join(src.strip_prefix("/").unwrap());
    let mut names = vec!["fifo"];
    if is_root() {
        names.extend(["null", "loop"]);
    }
    for name in names {
        assert_eq!(shape(&back.join(name)), shape(&src.join(name)), "{name}");
    }
    assert!(!back.join("agent.sock").exists());
    assert_eq!(fs::read(back.join("plain")).unwrap(), b"plain file");
}

/// `coffer restore latest` run as `nobody` into a new directory it owns (the repository made
/// readable to it first). Returns the target and the run's output.
fn restore_as_nobody(env: &Env) -> (std::path::PathBuf, std::process::Output) {
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    run("chmod", &["-R", "a+rX", &env.repo]);
    let target = env.path("as-nobody");
    fs::create_dir(&target).unwrap();
    run("chown", &["nobody", target.to_str().unwrap()]);
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(coffer_e2e::coffer_bin())
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &target)
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", &env.password)
        .output()
        .unwrap();
    (target, out)
}

#[test]
fn a_restore_that_may_not_create_devices_warns_and_exits_3() {
    if !is_root() {
        eprintln!("skipped: creating the device nodes to back up needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let (src, _socket) = special_tree(&env);
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let (target, out) = restore_as_nobody(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let back = target.join(src.strip_prefix("/").unwrap());
    for name in ["null", "loop"] {
        assert!(
            stderr.contains(&format!(
                "{}: not restored: creating a device node needs root (CAP_MKNOD)",
                back.join(name).display()
            )),
            "{stderr}"
        );
        assert!(!back.join(name).exists(), "{name}");
    }
    assert!(
        stderr.contains("2 entries of the snapshot could not be restored"),
        "{stderr}"
    );
    // Everything else is there.
    assert_eq!(shape(&back.join("fifo")).0, "fifo");
    assert_eq!(fs::read(back.join("plain")).unwrap(), b"plain file");
}

fn gzip(env: &Env, name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = env.path(name);
    fs::write(&path, content).unwrap();
    run("gzip", &["-n", "-f", path.to_str().unwrap()]);
    path.with_file_name(format!("{name}.gz"))
}

#[test]
fn only_real_dumps_get_the_compressed_dump_notice() {
    let env = Env::new();
    env.init();
    let docs = env.path("docs");
    fs::create_dir(&docs).unwrap();
    // A documentation directory of gzip files: no notice.
    let news = gzip(
        &env,
        "NEWS.Debian",
        &b"coffer (1.0) unstable; urgency=low\n".repeat(500),
    );
    fs::rename(&news, docs.join("NEWS.Debian.gz")).unwrap();
    let changelog = gzip(&env, "changelog", &coffer_e2e::pseudo_random(1, 300_000));
    fs::rename(&changelog, docs.join("changelog.gz")).unwrap();
    let out = env.run(&["backup", docs.to_str().unwrap()]).ok();
    assert!(!out.stderr.contains("notice"), "{}", out.stderr);

    // Two gzipped SQL dumps: one notice, naming the first.
    let dumps = env.path("dumps");
    fs::create_dir(&dumps).unwrap();
    let mut sql = b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n".to_vec();
    sql.extend(coffer_e2e::pseudo_random(2, 200_000));
    for name in ["a.sql", "b.sql"] {
        let gz = gzip(&env, name, &sql);
        fs::rename(&gz, dumps.join(format!("{name}.gz"))).unwrap();
    }
    let out = env.run(&["backup", dumps.to_str().unwrap()]).ok();
    let notices: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("notice:"))
        .collect();
    assert_eq!(notices.len(), 1, "{}", out.stderr);
    assert!(
        notices[0].contains("a.sql.gz is a compressed database dump (gzip)"),
        "{}",
        out.stderr
    );
    // Never under -q.
    let quiet = env
        .run(&["-q", "backup", "--force", dumps.to_str().unwrap()])
        .ok();
    assert_eq!(quiet.stderr, "", "{}", quiet.stderr);
}

#[test]
fn hard_links_are_restored_as_links_within_the_restored_set() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("lib/dri")).unwrap();
    fs::create_dir_all(src.join("bin")).unwrap();
    let driver = coffer_e2e::pseudo_random(3, 300_000);
    fs::write(src.join("lib/dri/a.so"), &driver).unwrap();
    // Links in the same directory and across directories.
    for name in ["lib/dri/b.so", "lib/dri/c.so", "bin/tool"] {
        fs::hard_link(src.join("lib/dri/a.so"), src.join(name)).unwrap();
    }
    fs::write(src.join("single"), b"one link").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();

    let ls = env.run(&["ls", "latest"]).ok().stdout;
    let line = |name: &str| {
        ls.lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{ls}"))
            .to_string()
    };
    assert!(line("/bin/tool").starts_with("-rw-r--r--   4 "), "{ls}");
    assert!(line("/single").starts_with("-rw-r--r--   1 "), "{ls}");

    // The whole tree: one inode for the four names, on disk once.
    let target = env.path("restored");
    let out = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert!(
        out.stdout.contains("linked  3 hard links"),
        "{}",
        out.stdout
    );
    let back = target.join(src.strip_prefix("/").unwrap());
    let first = fs::metadata(back.join("lib/dri/a.so")).unwrap();
    assert_eq!(first.nlink(), 4);
    for name in ["lib/dri/b.so", "lib/dri/c.so", "bin/tool"] {
        let m = fs::metadata(back.join(name)).unwrap();
        assert_eq!((m.dev(), m.ino()), (first.dev(), first.ino()), "{name}");
        assert_eq!(fs::read(back.join(name)).unwrap(), driver, "{name}");
    }
    assert_eq!(fs::metadata(back.join("single")).unwrap().nlink(), 1);

    // Only part of the set: links among what is restored (restic's rule).
    let part = env.path("part");
    let include = src.join("lib/dri");
    env.run(&[
        "restore",
        "latest",
        "--target",
        part.to_str().unwrap(),
        "--include",
        include.to_str().unwrap(),
    ])
    .ok();
    let back = part.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::metadata(back.join("lib/dri/a.so")).unwrap().nlink(), 3);
    assert_eq!(fs::read(back.join("lib/dri/c.so")).unwrap(), driver);
    assert!(!back.join("bin").exists());
}

/// Disk usage in bytes (`st_blocks`), what `du` shows.
fn usage(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_sparse_file_is_restored_with_its_holes() {
    use std::os::unix::fs::FileExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    // 1 GiB with three data extents of 1 MiB: at the start, in the middle, at the end.
    let len = 1u64 << 30;
    let sparse = src.join("disk.img");
    let file = fs::File::create(&sparse).unwrap();
    file.set_len(len).unwrap();
    for (i, at) in [0, len / 2, len - (1 << 20)].into_iter().enumerate() {
        let data = coffer_e2e::pseudo_random(10 + i as u64, 1 << 20);
        file.write_all_at(&data, at).unwrap();
    }
    drop(file);
    let source_usage = usage(&sparse);
    assert!(source_usage < 8 << 20, "the file system made no holes");
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let back = target.join(src.strip_prefix("/").unwrap()).join("disk.img");
    assert_eq!(fs::metadata(&back).unwrap().len(), len);
    assert_eq!(usage(&back), source_usage);
    // Same bytes: compared in pieces to keep memory small.
    let (a, b) = (
        fs::File::open(&sparse).unwrap(),
        fs::File::open(&back).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 16 << 20], vec![0u8; 16 << 20]);
    for at in (0..len).step_by(16 << 20) {
        a.read_exact_at(&mut x, at).unwrap();
        b.read_exact_at(&mut y, at).unwrap();
        assert!(x == y, "differs in the 16 MiB at {at}");
    }
}

/// `getfattr -d -m - -h -R` of a tree, with the tree's own path taken out (so two trees compare),
/// and `getcap -r`'s lines in the same way.
fn attributes(root: &Path) -> String {
    let dump = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{program}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let mut all = dump("getfattr", &["-d", "-m", "-", "-h", "-R", "."]);
    all.push_str(&dump("getcap", &["-r", "."]));
    all
}

#[test]
fn extended_attributes_acls_and_capabilities_are_restored() {
    if !is_root() {
        eprintln!("skipped: trusted.* attributes and file capabilities need root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("xattrs");
    fs::create_dir_all(src.join("shared")).unwrap();
    fs::write(src.join("notes.txt"), "notes").unwrap();
    fs::copy("/bin/true", src.join("pinger")).unwrap();
    run("mkfifo", &[src.join("pipe").to_str().unwrap()]);
    std::os::unix::fs::symlink("notes.txt", src.join("link")).unwrap();
    let p = |name: &str| src.join(name).to_str().unwrap().to_string();
    run(
        "setfattr",
        &["-n", "user.comment", "-v", "hello", &p("notes.txt")],
    );
    run(
        "setfattr",
        &["-n", "user.binary", "-v", "0x00ff0a", &p("notes.txt")],
    );
    run("setfacl", &["-m", "u:1234:rw", &p("notes.txt")]);
    run("setfacl", &["-d", "-m", "u:1234:rx", &p("shared")]);
    run("setfattr", &["-n", "user.dir", "-v", "d", &p("shared")]);
    run("setcap", &["cap_net_raw+ep", &p("pinger")]);
    run("setfattr", &["-n", "trusted.pipe", "-v", "p", &p("pipe")]);
    run(
        "setfattr",
        &["-h", "-n", "trusted.link", "-v", "l", &p("link")],
    );
    let want = attributes(&src);
    for needle in [
        "user.comment",
        "system.posix_acl_access",
        "system.posix_acl_default",
        "trusted.pipe",
        "trusted.link",
        "cap_net_raw=ep",
    ] {
        assert!(want.contains(needle), "the source lacks {needle}: {want}");
    }

    env.run(&["backup", src.to_str().unwrap()]).ok();
    let target = env.path("back");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(attributes(&back), want);
    // The mode's group bits are the ACL's mask, as they were.
    assert_eq!(
        fs::metadata(back.join("notes.txt")).unwrap().mode(),
        fs::metadata(src.join("notes.txt")).unwrap().mode()
    );

    // --no-xattrs on restore: none set.
    let bare = env.path("bare");
    env.run(&[
        "restore",
        "latest",
        "--no-xattrs",
        "--target",
        bare.to_str().unwrap(),
    ])
    .ok();
    let plain = attributes(&bare.join(src.strip_prefix("/").unwrap()));
    assert!(
        !plain.contains("user.") && !plain.contains("cap_"),
        "{plain}"
    );

    // --no-xattrs on backup: the snapshot keeps none.
    env.run(&["backup", "--no-xattrs", "--force", src.to_str().unwrap()])
        .ok();
    let bare2 = env.path("bare2");
    env.run(&["restore", "latest", "--target", bare2.to_str().unwrap()])
        .ok();
    let plain = attributes(&bare2.join(src.strip_prefix("/").unwrap()));
    assert!(
        !plain.contains("user.") && !plain.contains("cap_"),
        "{plain}"
    );
}

/// A restore by a user who may not set some attributes (file capabilities, trusted.*) restores
/// everything with a warning naming them, exit 0, and sets the ones it may (user.*, ACLs).
#[test]
fn attributes_the_restoring_user_may_not_set_are_named_in_warnings() {
    if !is_root() {
        eprintln!("skipped: setting the attributes to back up needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("xattrs");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "notes").unwrap();
    fs::copy("/bin/true", src.join("pinger")).unwrap();
    let p = |name: &str| src.join(name).to_str().unwrap().to_string();
    run(
        "setfattr",
        &["-n", "user.comment", "-v", "hello", &p("notes.txt")],
    );
    run("setfacl", &["-m", "u:1234:rw", &p("notes.txt")]);
    run(
        "setfattr",
        &["-n", "trusted.secret", "-v", "t", &p("notes.txt")],
    );
    run("setcap", &["cap_net_raw+ep", &p("pinger")]);
    env.run(&["backup", src.to_str().unwrap()]).ok();

    let (target, out) = restore_as_nobody(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let back = target.join(src.strip_prefix("/").unwrap());
    for (file, attr) in [
        ("notes.txt", "trusted.secret"),
        ("pinger", "security.capability"),
    ] {
        let line = format!(
            "{}: restored, but extended attributes not set: {attr}: ",
            back.join(file).display()
        );
        assert!(stderr.contains(&line), "no warning {line:?} in {stderr}");
    }
    assert!(
        stderr.contains("2 entries were restored without some of their extended attributes"),
        "{stderr}"
    );
    assert_eq!(fs::read(back.join("notes.txt")).unwrap(), b"notes");
    let got = attributes(&back);
    assert!(got.contains("user.comment=\"hello\""), "{got}");
    assert!(got.contains("system.posix_acl_access"), "{got}");
}

/// The paths of a snapshot, from `coffer ls --json`, below `root`.
fn listed(env: &Env, root: &Path) -> Vec<String> {
    let out = env.run(&["ls", "latest", "--json"]).ok();
    let prefix = root.to_str().unwrap();
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .filter_map(|p| {
            p.strip_prefix(prefix)
                .map(|r| r.trim_start_matches('/').to_string())
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// restic's selection: exclude patterns matched component-wise from any depth (`.git/`,
/// `gitrepo/.git`, `docs/*.md`), --iexclude, --exclude-file, --exclude-if-present,
/// --exclude-caches, --exclude-larger-than, and -x at a mount point.
#[test]
fn selection_flags_leave_out_what_they_name() {
    let env = Env::new();
    env.init();
    let src = env.path("sel");
    let mk = |rel: &str, content: &[u8]| {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    };
    mk("app/.git/HEAD", b"ref");
    mk("app/main.rs", b"fn main() {}");
    mk("vendor/gitrepo/.git/config", b"x");
    mk("vendor/gitrepo/lib.rs", b"x");
    mk("docs/a.md", b"x");
    mk("docs/keep.txt", b"x");
    mk("docs/sub/b.md", b"x");
    mk("photo.JPG.BAK", b"x");
    mk("notes.tmp", b"x");
    mk("private/.nobackup", b"");
    mk("private/secret.txt", b"x");
    mk(
        "cache/CACHEDIR.TAG",
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    mk("cache/blob", b"x");
    mk("fakecache/CACHEDIR.TAG", b"not the signature");
    mk("fakecache/blob", b"x");
    mk("big.iso", &vec![7u8; 4096]);
    mk("small.bin", &[7u8; 1024]);
    let list = env.path("exclude-list");
    fs::write(&list, "# temporary files\n*.tmp\n\n").unwrap();
    env.run(&[
        "backup",
        "-e",
        ".git/",
        "-e",
        "docs/*.md",
        "--iexclude",
        "*.bak",
        "--exclude-file",
        list.to_str().unwrap(),
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
        "--exclude-larger-than",
        "2K",
        src.to_str().unwrap(),
    ])
    .ok();
    let mut got = listed(&env, &src);
    got.sort();
    let want = [
        "app",
        "app/main.rs",
        "cache",
        "cache/CACHEDIR.TAG",
        "docs",
        "docs/keep.txt",
        "docs/sub",
        "docs/sub/b.md",
        "fakecache",
        "fakecache/CACHEDIR.TAG",
        "fakecache/blob",
        "private",
        "private/.nobackup",
        "small.bin",
        "vendor",
        "vendor/gitrepo",
        "vendor/gitrepo/lib.rs",
    ];
    assert_eq!(got, want);

    // -x: a file system mounted below the path is stored as an empty directory.
    if !is_root() {
        eprintln!("skipped the -x part: mounting needs root");
        return;
    }
    let mnt = src.join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(
        "mount",
        &["-t", "tmpfs", "coffer-test", mnt.to_str().unwrap()],
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    fs::write(mnt.join("elsewhere"), "x").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    assert!(listed(&env, &src).contains(&"mnt/elsewhere".to_string()));
    env.run(&["backup", "-x", src.to_str().unwrap()]).ok();
    let got = listed(&env, &src);
    assert!(got.contains(&"mnt".to_string()), "{got:?}");
    assert!(!got.contains(&"mnt/elsewhere".to_string()), "{got:?}");
    assert!(got.contains(&"app/.git/HEAD".to_string()), "{got:?}");
}

/// --files-from (comments and blank lines skipped), --files-from-verbatim and --files-from-raw
/// (NUL-separated, any byte in a name) add to the paths given.
#[test]
fn paths_come_from_lists() {
    let env = Env::new();
    env.init();
    let base = env.path("lists");
    for d in ["one", "two", "three", "#four", "five\nlines"] {
        fs::create_dir_all(base.join(d)).unwrap();
        fs::write(base.join(d).join("f"), d).unwrap();
    }
    let p = |d: &str| base.join(d).to_str().unwrap().to_string();
    let lines = env.path("lines");
    fs::write(
        &lines,
        format!("# the first two\n{}\n\n{}\n", p("one"), p("two")),
    )
    .unwrap();
    let verbatim = env.path("verbatim");
    fs::write(&verbatim, format!("{}\n", p("#four"))).unwrap();
    let raw = env.path("raw");
    fs::write(&raw, format!("{}\0", p("five\nlines"))).unwrap();
    let out = env
        .run(&[
            "backup",
            "--json",
            "--files-from",
            lines.to_str().unwrap(),
            "--files-from-verbatim",
            verbatim.to_str().unwrap(),
            "--files-from-raw",
            raw.to_str().unwrap(),
            &p("three"),
        ])
        .ok();
    let summary: serde_json::Value =
        serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    let mut paths: Vec<String> = summary["snapshot"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let mut want: Vec<String> = ["one", "two", "three", "#four", "five\nlines"]
        .iter()
        .map(|d| p(d))
        .collect();
    want.sort();
    assert_eq!(paths, want);
    // A list that names nothing is refused, not an empty backup.
    let empty = env.path("empty");
    fs::write(&empty, "# nothing\n").unwrap();
    let run = env.run(&["backup", "--files-from", empty.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("name no paths"), "{run:?}");
}
