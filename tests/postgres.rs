//! Backup sets against a real PostgreSQL server: a pgbench database, an uploads tree and a
//! `.env` in one snapshot; restores that reproduce each state exactly; deduplication of
//! consecutive dumps; failing dumps that save nothing; drills; refused restores.
//!
//! Each test starts its own throwaway cluster (see `PgCluster`); nothing outside /tmp is touched.

use coffer_e2e::{pseudo_random, tree_contents, Env, PgCluster};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A repository, a cluster and an app: `app` database, `app/files` uploads, `app/.env`.
struct Setup {
    env: Env,
    pg: PgCluster,
    config: PathBuf,
}

impl Setup {
    fn new(scale: u32) -> Setup {
        let pg = PgCluster::start();
        let mut env = Env::new();
        env.extra_env = pg.env();
        env.init();
        pg.pgbench_init("app", scale);
        let files = env.path("app/files");
        std::fs::create_dir_all(files.join("avatars")).unwrap();
        std::fs::write(files.join("avatars/1.png"), pseudo_random(1, 70_000)).unwrap();
        std::fs::write(files.join("report.pdf"), pseudo_random(2, 300_000)).unwrap();
        std::fs::write(
            env.path("app/.env"),
            "DATABASE_URL=postgres://app@db/app\nSECRET=one\n",
        )
        .unwrap();
        let config = env.path("coffer.toml");
        let setup = Setup { env, pg, config };
        setup.write_config("");
        setup
    }

    /// The config with the three sources; `db_extra` goes into `[sources.db]`.
    fn write_config(&self, db_extra: &str) {
        let text = format!(
            r#"repository = "{repo}"
tags = ["nightly"]

[sources.db]
kind = "postgres"
database = "app"
{db_extra}

[sources.files]
kind = "path"
path = "app/files"

[sources.env]
kind = "path"
path = "app/.env"

[retention]
keep-last = 3
keep-daily = 7
timezone = "UTC"
"#,
            repo = self.env.repo
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn coffer(&self, args: &[&str]) -> coffer_e2e::Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        self.env.run(&all)
    }

    fn backup_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["backup", "--json"];
        args.extend_from_slice(extra);
        let out = self.coffer(&args).ok();
        serde_json::from_str(&out.stdout).unwrap()
    }
}

fn source<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {snapshot}"))
}

#[test]
fn a_backup_set_restores_each_state_exactly() {
    let s = Setup::new(1);
    let db1 = s.pg.fingerprint("app");
    let files1 = tree_contents(&s.env.path("app/files"));
    let env1 = std::fs::read(s.env.path("app/.env")).unwrap();
    let first = s.backup_json(&["--label", "release=1"]);
    let snap1 = &first["snapshot"];
    // One snapshot holds all three sources, with the dump's facts.
    let db = source(snap1, "db");
    assert_eq!(db["kind"], "postgres");
    assert_eq!(db["postgres"]["database"], "app");
    assert_eq!(db["postgres"]["format"], "custom");
    assert!(db["postgres"]["toc_entries"].as_u64().unwrap() > 4);
    assert!(db["postgres"]["server_version"]
        .as_str()
        .unwrap()
        .starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(db["stream"]["sha256"].as_str().unwrap().len(), 64);
    let accounts = db["postgres"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "pgbench_accounts")
        .unwrap();
    assert_eq!(accounts["rows"], 100_000);
    assert_eq!(source(snap1, "files")["kind"], "path");
    assert_eq!(source(snap1, "env")["kind"], "path");
    assert_eq!(snap1["labels"]["release"], "1");
    assert_eq!(snap1["tags"][0], "nightly");

    // Change rows and files.
    s.pg.pgbench_run("app", 200);
    s.pg.psql(
        "app",
        "UPDATE pgbench_accounts SET filler = 'changed' WHERE aid % 97 = 0;\
         DELETE FROM pgbench_accounts WHERE aid > 99000;",
    );
    std::fs::write(
        s.env.path("app/files/report.pdf"),
        pseudo_random(3, 310_000),
    )
    .unwrap();
    std::fs::write(s.env.path("app/files/new.txt"), "new upload").unwrap();
    std::fs::remove_file(s.env.path("app/files/avatars/1.png")).unwrap();
    std::fs::write(s.env.path("app/.env"), "SECRET=two\n").unwrap();
    let db2 = s.pg.fingerprint("app");
    assert_ne!(db1, db2);
    let files2 = tree_contents(&s.env.path("app/files"));
    let second = s.backup_json(&[]);
    let id1 = first["id"].as_str().unwrap();
    let id2 = second["id"].as_str().unwrap();
    assert_ne!(id1, id2);

    // The first snapshot into a fresh database and directory: the first state.
    let out1 = s.env.path("restore1");
    s.coffer(&[
        "restore",
        id1,
        "--target",
        out1.to_str().unwrap(),
        "--pg-target",
        "first",
    ])
    .ok();
    assert_eq!(s.pg.fingerprint("first"), db1);
    let origin = |name: &str| s.env.path(name).canonicalize().unwrap();
    let below = |target: &Path, p: PathBuf| target.join(p.strip_prefix("/").unwrap());
    assert_eq!(tree_contents(&below(&out1, origin("app/files"))), files1);
    assert_eq!(
        std::fs::read(below(&out1, origin("app/.env"))).unwrap(),
        env1
    );

    // The second: the second state.
    let out2 = s.env.path("restore2");
    let report = s
        .coffer(&[
            "restore",
            id2,
            "--target",
            out2.to_str().unwrap(),
            "--pg-target",
            "second",
            "--json",
        ])
        .ok();
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["mismatches"].as_array().unwrap().len(), 0);
    assert_eq!(s.pg.fingerprint("second"), db2);
    assert_eq!(tree_contents(&below(&out2, origin("app/files"))), files2);
    assert_eq!(
        std::fs::read(below(&out2, origin("app/.env"))).unwrap(),
        b"SECRET=two\n"
    );

    // --only restores one source; the others are left alone.
    let out3 = s.env.path("restore3");
    s.coffer(&[
        "restore",
        id1,
        "--only",
        "env",
        "--target",
        out3.to_str().unwrap(),
    ])
    .ok();
    assert!(below(&out3, origin("app/.env")).exists());
    assert!(!below(&out3, origin("app/files")).exists());
    assert!(!s.pg.database_exists("app_x"));
}

#[test]
fn consecutive_dumps_deduplicate() {
    let s = Setup::new(4);
    let first = s.backup_json(&[]);
    let dump_bytes = source(&first["snapshot"], "db")["stream"]["bytes"]
        .as_u64()
        .unwrap();
    assert!(dump_bytes > 30_000_000, "dump of {dump_bytes} bytes");

    // 1% of the rows change (a range of ids, as an application's recent records do).
    s.pg.psql(
        "app",
        "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid BETWEEN 200001 AND 204000;",
    );
    let second = s.backup_json(&[]);
    let added = second["snapshot"]["summary"]["added_raw_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        added * 10 < dump_bytes,
        "1% of rows changed: {added} new bytes for a {dump_bytes}-byte dump"
    );

    // A few hundred scattered row updates: 150 pgbench transactions each update one random
    // account, teller and branch and insert a history row. An updated row moves in the table,
    // so each update changes the dump in two places; at 16 KiB chunks that is about 20% of
    // this 40 MB dump (1 MiB chunks would store nearly all of it again).
    s.pg.pgbench_run("app", 150);
    let third = s.backup_json(&[]);
    let added = third["snapshot"]["summary"]["added_raw_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        added * 100 < dump_bytes * 35,
        "150 transactions: {added} new bytes for a {dump_bytes}-byte dump"
    );
}

#[test]
fn a_failing_dump_saves_nothing_and_names_the_source() {
    let s = Setup::new(1);
    let cases: [(&str, &str); 3] = [
        // The database does not exist: the snapshot transaction cannot start.
        ("database = \"no_such_db\"", "no_such_db"),
        // pg_dump itself fails after the transaction began.
        (
            "pg-dump-args = [\"--table=no_such_table\"]",
            "no matching tables",
        ),
        // A wrong command prefix.
        (
            "command-prefix = [\"/nonexistent/docker\", \"exec\"]",
            "/nonexistent/docker",
        ),
    ];
    for (extra, expected) in cases {
        // `database` may be overridden: write it without the default line in that case.
        if extra.starts_with("database") {
            let text = std::fs::read_to_string(&s.config)
                .unwrap()
                .replace("database = \"app\"", extra);
            std::fs::write(&s.config, text).unwrap();
        } else {
            s.write_config(extra);
        }
        let run = s.coffer(&["backup"]).expect_code(1);
        assert!(
            run.stderr.contains("source \"db\""),
            "{extra}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(expected), "{extra}: {}", run.stderr);
        assert!(
            run.stderr.contains("no snapshot was saved"),
            "{}",
            run.stderr
        );
        assert_eq!(s.env.snapshots().len(), 0, "{extra}");
        s.write_config("");
    }
    // And the same configuration works once fixed.
    s.coffer(&["backup"]).ok();
    assert_eq!(s.env.snapshots().len(), 1);
}

/// Flips one byte of the stored blob `id` inside its pack file.
fn tamper_with_blob(env: &Env, id: &str) {
    for entry in std::fs::read_dir(Path::new(&env.repo).join("index")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let index: Value =
            serde_json::from_str(&env.run(&["cat", "index", &name]).ok().stdout).unwrap();
        for pack in index["packs"].as_array().unwrap() {
            for blob in pack["blobs"].as_array().unwrap() {
                if blob["id"] == id {
                    let pack_id = pack["pack"].as_str().unwrap();
                    let path = Path::new(&env.repo)
                        .join("data")
                        .join(&pack_id[..2])
                        .join(pack_id);
                    let mut bytes = std::fs::read(&path).unwrap();
                    let at = blob["offset"].as_u64().unwrap() as usize + 40;
                    bytes[at] ^= 0x55;
                    std::fs::write(&path, bytes).unwrap();
                    return;
                }
            }
        }
    }
    panic!("blob {id} not found in any index");
}

fn tree(env: &Env, id: &str) -> Value {
    serde_json::from_str(&env.run(&["cat", "tree", id]).ok().stdout).unwrap()
}

#[test]
fn drill_passes_on_a_good_snapshot_and_names_a_tampered_source() {
    let s = Setup::new(1);
    s.backup_json(&[]);
    let run = s.coffer(&["drill", "--json"]).ok();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let names: Vec<&str> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "env", "files"]);
    // The passed drill is recorded as a drill result; the snapshot keeps its id and labels.
    let snapshots = s.env.snapshots();
    assert_eq!(snapshots.len(), 1);
    let snapshot_id = snapshots[0]["id"].as_str().unwrap().to_string();
    assert_eq!(report["snapshot"], snapshot_id.as_str());
    assert!(snapshots[0]["labels"].get("drill.verified").is_none());
    assert!(snapshots[0].get("original").is_none());
    let passed_id = report["recorded"].as_str().unwrap().to_string();
    assert!(report["rto_seconds"].as_f64().unwrap() > 0.0, "{report}");
    let db = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "db")
        .unwrap();
    assert!(db["restore_seconds"].as_f64().unwrap() > 0.0, "{report}");
    // The scratch database is gone again.
    let dbs = s.pg.psql("postgres", "SELECT datname FROM pg_database;");
    assert!(!dbs.contains("coffer_drill"), "{dbs}");
    // Check knows the drill result (no stray, no damage); status shows the pass.
    let check = s.coffer(&["check"]).ok();
    assert!(!check.stdout.contains("drills/"), "{}", check.stdout);
    assert!(!check.stderr.contains("drills/"), "{}", check.stderr);
    let status = s.coffer(&["status"]).ok();
    assert!(
        status.stdout.contains("drill     passed"),
        "{}",
        status.stdout
    );

    // Tamper with one blob of the dump.
    let snapshots = s.env.snapshots();
    let root = snapshots[0]["tree"].as_str().unwrap();
    let db_dir = tree(&s.env, root)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "db")
        .unwrap()["subtree"]
        .as_str()
        .unwrap()
        .to_string();
    let dump = tree(&s.env, &db_dir)["nodes"][0].clone();
    assert_eq!(dump["name"], "app.dump");
    let blob = dump["content"][3].as_str().unwrap().to_string();
    tamper_with_blob(&s.env, &blob);

    let run = s.coffer(&["drill", "--json"]).expect_code(1);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let by_name = |n: &str| {
        report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("db")["ok"], false, "{report}");
    assert_eq!(by_name("files")["ok"], true, "{report}");
    assert!(run.stderr.contains("db"), "{}", run.stderr);
    let dbs = s.pg.psql("postgres", "SELECT datname FROM pg_database;");
    assert!(!dbs.contains("coffer_drill"), "{dbs}");
    let failed_id = report["recorded"].as_str().unwrap().to_string();
    assert_ne!(failed_id, passed_id);

    // Still the same snapshot, under the same id.
    let snapshots = s.env.snapshots();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["id"], snapshot_id.as_str());

    // Both drills are listed, oldest first, with their verdicts.
    let list: Value =
        serde_json::from_str(&s.coffer(&["drill", "--list", "--json"]).ok().stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["id"], passed_id.as_str());
    assert_eq!(list[0]["passed"], true);
    assert_eq!(list[1]["id"], failed_id.as_str());
    assert_eq!(list[1]["passed"], false);
    for entry in list {
        assert_eq!(entry["snapshot"], snapshot_id.as_str());
        assert_eq!(entry["snapshot_present"], true);
        assert_eq!(entry["legacy"], false);
    }
    let verdicts: Vec<(&str, bool)> = list[1]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["passed"].as_bool().unwrap()))
        .collect();
    assert_eq!(verdicts, [("db", false), ("env", true), ("files", true)]);
    let text = s.coffer(&["drill", "--list"]).ok().stdout;
    assert!(text.contains("passed") && text.contains("FAILED"), "{text}");
    assert!(text.contains("db FAILED"), "{text}");

    // The snapshot's details show its last drill; status reports the failure and exits 1.
    let details = s.coffer(&["snapshots", "latest", "--details"]).ok().stdout;
    assert!(details.contains("drill     FAILED"), "{details}");
    let run = s.coffer(&["status"]).expect_code(1);
    assert!(run.stdout.contains("drill     FAILED"), "{}", run.stdout);
    assert!(run.stderr.contains("FAILED"), "{}", run.stderr);
    assert!(run.stderr.contains("db"), "{}", run.stderr);
    let run = s.coffer(&["status", "--json"]).expect_code(1);
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["ok"], false);
    assert_eq!(status["groups"][0]["last_drill_result"]["passed"], false);
    assert_eq!(
        status["groups"][0]["last_drill_result"]["failed_sources"],
        serde_json::json!(["db"])
    );
}

#[test]
fn restoring_into_a_database_with_tables_needs_force_and_changes_nothing() {
    let s = Setup::new(1);
    let before = s.pg.fingerprint("app");
    s.backup_json(&[]);
    s.pg.pgbench_run("app", 100);
    std::fs::write(s.env.path("app/files/after.txt"), "later").unwrap();
    let changed = s.pg.fingerprint("app");
    assert_ne!(before, changed);
    let target = s.env.path("restored");

    // Into the live database, without --force and without a terminal: refused.
    let run = s
        .coffer(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect_code(1);
    assert!(run.stderr.contains("already has"), "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(s.pg.fingerprint("app"), changed);
    assert!(
        !target.exists(),
        "files were restored although the restore was refused"
    );

    // --dry-run says what would happen and changes nothing either.
    let run = s
        .coffer(&["restore", "latest", "--dry-run", "--force"])
        .ok();
    assert!(run.stdout.contains("would be replaced"), "{}", run.stdout);
    assert_eq!(s.pg.fingerprint("app"), changed);

    // With --force: the snapshot's state, row counts checked.
    s.coffer(&["restore", "latest", "--only", "db", "--force"])
        .ok();
    assert_eq!(s.pg.fingerprint("app"), before);
}

#[test]
fn manifests_and_labels_are_queryable() {
    let s = Setup::new(1);
    let manifest = s.env.path("weavestream-postgres-1.manifest.json");
    std::fs::write(
        &manifest,
        r#"{"appVersion": "2.3.1", "migrationHash": "abc123", "encryption": {"keyId": "k7"}}"#,
    )
    .unwrap();
    let meta = s.env.path("tma.meta");
    std::fs::write(&meta, "database=tma_cloud_storage\ntoc_entries=145\n").unwrap();
    let first = s.backup_json(&[
        "--manifest",
        manifest.to_str().unwrap(),
        "--manifest",
        meta.to_str().unwrap(),
        "--label",
        "app_version=2.3.1",
    ]);
    s.backup_json(&["--label", "app_version=2.4.0"]);
    let labels = &first["snapshot"]["labels"];
    assert_eq!(labels["appVersion"], "2.3.1");
    assert_eq!(labels["encryption.keyId"], "k7");
    assert_eq!(labels["toc_entries"], "145");

    let run = s
        .coffer(&["snapshots", "--label", "app_version=2.3.1", "--json"])
        .ok();
    let list: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], first["id"]);

    let id = first["id"].as_str().unwrap();
    let run = s.coffer(&["snapshots", &id[..8], "--details"]).ok();
    for needle in [
        "migrationHash=abc123",
        "source    db (postgres)",
        "pgbench_accounts",
        "TOC entries",
        "sha256",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
}

#[test]
fn compressed_dump_files_get_a_warning_and_uncompressed_ones_dump_chunks() {
    let s = Setup::new(1);
    let dir = s.env.path("dumps");
    std::fs::create_dir_all(&dir).unwrap();
    let dump = |args: &[&str], file: &str| {
        let path = dir.join(file);
        let out = std::process::Command::new("pg_dump")
            .args(args)
            .arg("--dbname=app")
            .arg(format!("--file={}", path.display()))
            .envs(s.pg.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    dump(&["-Fc", "-Z0"], "plain.dump");
    dump(&["-Fc", "-Z6"], "compressed.dump");
    let run = s.env.run(&["backup", "--json", dir.to_str().unwrap()]).ok();
    let notices = run.stderr.matches("notice:").count();
    assert_eq!(notices, 1, "{}", run.stderr);
    assert!(run.stderr.contains("compressed.dump"), "{}", run.stderr);
    assert!(run.stderr.contains("-Z0"), "{}", run.stderr);
    // The uncompressed dump was cut into small chunks: many blobs for its ~10 MB.
    let snapshots = s.env.snapshots();
    let root = snapshots[0]["tree"].as_str().unwrap();
    let mut node = tree(&s.env, root);
    for part in dir.canonicalize().unwrap().iter().skip(1) {
        let sub = node["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == part.to_str().unwrap())
            .unwrap()
            .clone();
        if sub["type"] == "dir" {
            node = tree(&s.env, sub["subtree"].as_str().unwrap());
        }
    }
    let plain = node["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "plain.dump")
        .unwrap();
    let chunks = plain["content"].as_array().unwrap().len() as u64;
    let size = plain["size"].as_u64().unwrap();
    assert!(
        size / chunks < 64 * 1024,
        "{chunks} chunks for {size} bytes: not dump chunking"
    );

    // The same recognition for a dump piped in on stdin.
    let bytes = std::fs::read(dir.join("plain.dump")).unwrap();
    s.env
        .run_stdin(&["backup", "--stdin-name", "piped/app.dump"], &bytes)
        .ok();
    let snapshots = s.env.snapshots();
    let root = snapshots[1]["tree"].as_str().unwrap();
    let piped = tree(&s.env, root)["nodes"][0]["subtree"]
        .as_str()
        .unwrap()
        .to_string();
    let node = tree(&s.env, &piped)["nodes"][0].clone();
    let chunks = node["content"].as_array().unwrap().len() as u64;
    assert!(
        bytes.len() as u64 / chunks < 64 * 1024,
        "{chunks} chunks for a piped dump of {} bytes",
        bytes.len()
    );
    let compressed = std::fs::read(dir.join("compressed.dump")).unwrap();
    let run = s
        .env
        .run_stdin(&["backup", "--stdin-name", "piped/c.dump"], &compressed)
        .ok();
    assert!(run.stderr.contains("notice:"), "{}", run.stderr);
    assert!(run.stderr.contains("piped/c.dump"), "{}", run.stderr);
}

#[test]
fn plain_sql_dumps_restore_through_psql() {
    let s = Setup::new(1);
    s.write_config("format = \"plain\"");
    let before = s.pg.fingerprint("app");
    let first = s.backup_json(&[]);
    let db = source(&first["snapshot"], "db");
    assert_eq!(db["postgres"]["format"], "plain");
    assert_eq!(db["tree_path"], "/db/app.sql");
    assert_eq!(db["postgres"]["toc_entries"], 0);
    s.coffer(&[
        "restore",
        "latest",
        "--only",
        "db",
        "--pg-target",
        "from_plain",
    ])
    .ok();
    assert_eq!(s.pg.fingerprint("from_plain"), before);
}

#[test]
fn a_serializable_deferrable_backup_succeeds_and_restores() {
    let s = Setup::new(1);
    s.write_config("consistency = \"serializable-deferrable\"");
    let before = s.pg.fingerprint("app");
    let report = s.backup_json(&[]);
    let db = source(&report["snapshot"], "db");
    assert!(
        db["postgres"]["tables"].as_array().unwrap().len() >= 4,
        "{db}"
    );
    s.pg.pgbench_run("app", 50);
    s.coffer(&[
        "restore",
        "latest",
        "--only",
        "db",
        "--pg-target",
        "app_serial",
    ])
    .ok();
    assert_eq!(s.pg.fingerprint("app_serial"), before);
    // An unknown word is refused, naming the option.
    s.write_config("consistency = \"serializable\"");
    let run = s.coffer(&["backup"]).expect_code(2);
    assert!(run.stderr.contains("consistency"), "{}", run.stderr);
}

#[test]
fn a_locked_table_makes_the_row_count_fail_within_the_lock_timeout() {
    use std::io::Write;
    let s = Setup::new(1);
    s.write_config("lock-timeout = \"1s\"");
    // Another session holds an ACCESS EXCLUSIVE lock (a migration's ALTER TABLE, say).
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-d", "app"])
        .envs(s.pg.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdin = holder.stdin.as_mut().unwrap();
    stdin
        .write_all(b"BEGIN;\nLOCK TABLE pgbench_accounts IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    stdin.flush().unwrap();
    let locked = (0..100).any(|_| {
        let n = s.pg.psql(
            "app",
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'pgbench_accounts' AND l.mode = 'AccessExclusiveLock' \
             AND l.granted;",
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        n.trim() == "1"
    });
    assert!(locked, "the holding session did not take its lock");

    // The backup fails within the timeout (not waiting for the lock), saying why.
    let started = std::time::Instant::now();
    let mut child = s
        .env
        .cmd(&["--config", s.config.to_str().unwrap(), "backup"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let _ = holder.kill();
            panic!("the backup waited for the lock instead of failing after lock-timeout");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(stderr.contains("lock-timeout"), "{stderr}");
    assert!(stderr.contains("counting the rows"), "{stderr}");
    assert!(stderr.contains("no snapshot was saved"), "{stderr}");
    assert_eq!(s.env.snapshots().len(), 0);

    // Once the lock is gone, the same configuration backs up.
    let _ = holder.kill();
    let _ = holder.wait();
    s.coffer(&["backup"]).ok();
    assert_eq!(s.env.snapshots().len(), 1);
}
