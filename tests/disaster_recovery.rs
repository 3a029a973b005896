//! Disaster recovery against real PostgreSQL clusters: replacing a live database with a
//! snapshot (`restore --force`: a fresh database swapped in, other connections terminated, the
//! old one untouched when anything fails), for custom and plain-SQL dumps.
//!
//! Each test starts its own throwaway clusters (see `PgCluster`); nothing outside /tmp is
//! touched.

use coffer_e2e::{Env, PgCluster};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A repository and a cluster with an `app` database (pgbench tables), backed up by a config
/// with one postgres source `db`.
struct Setup {
    env: Env,
    pg: PgCluster,
    config: PathBuf,
}

impl Setup {
    fn new(db_extra: &str) -> Setup {
        let pg = PgCluster::start();
        let mut env = Env::new();
        env.extra_env = pg.env();
        env.init();
        pg.pgbench_init("app", 1);
        let config = env.path("coffer.toml");
        let text = format!(
            "repository = \"{}\"\n\n[sources.db]\nkind = \"postgres\"\ndatabase = \"app\"\n{db_extra}\n",
            env.repo
        );
        std::fs::write(&config, text).unwrap();
        Setup { env, pg, config }
    }

    fn coffer(&self, args: &[&str]) -> coffer_e2e::Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        self.env.run(&all)
    }

    /// The databases of the cluster, sorted.
    fn databases(&self) -> Vec<String> {
        let out = self.pg.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1;",
        );
        out.lines().map(str::to_string).collect()
    }

    /// A session on `db` that holds a transaction open (it has read a table), named `holder`.
    fn hold_transaction(&self, db: &str) -> Child {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-d", db])
            .envs(self.pg.env())
            .env("PGAPPNAME", "holder")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN;\nSELECT count(*) FROM pgbench_branches;\n")
            .unwrap();
        stdin.flush().unwrap();
        // Until the server shows it inside its transaction.
        for _ in 0..100 {
            let state = self.pg.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'holder' \
                 AND state = 'idle in transaction';",
            );
            if state.trim() == "1" {
                return child;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the holding session did not start its transaction");
    }
}

/// Changes after the snapshot: a table the snapshot does not have, and changed rows.
fn change_after_snapshot(pg: &PgCluster) {
    pg.psql(
        "app",
        "CREATE TABLE created_later (x int); INSERT INTO created_later VALUES (1), (2);",
    );
    pg.pgbench_run("app", 50);
}

/// `--force` over a live database: the fresh database replaces it, the session holding a
/// transaction is terminated and named, the later table is gone and the counts match exactly.
fn replace_live_database(s: &Setup) {
    let before = s.pg.fingerprint("app");
    s.coffer(&["backup"]).ok();
    change_after_snapshot(&s.pg);
    assert_ne!(s.pg.fingerprint("app"), before);
    let mut holder = s.hold_transaction("app");

    let run = s
        .coffer(&["restore", "latest", "--force", "--wait", "1", "--json"])
        .ok();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["mismatches"], Value::Array(Vec::new()), "{report}");
    let db = &report["sources"][0]["report"];
    assert_eq!(db["replaced"], true, "{report}");
    assert_eq!(
        db["closed_connections"][0]["application"], "holder",
        "{report}"
    );
    for table in db["tables"].as_array().unwrap() {
        assert_eq!(table["expected"], table["actual"], "{table}");
    }
    assert_eq!(s.pg.fingerprint("app"), before);
    assert_eq!(s.databases(), ["app", "postgres"]);
    // The terminated session is gone.
    let _ = holder.kill();
    let _ = holder.wait();

    // The text output names the terminated session too.
    change_after_snapshot(&s.pg);
    let mut holder = s.hold_transaction("app");
    let run = s.coffer(&["restore", "latest", "--force"]).ok();
    assert!(
        run.stdout.contains("replaced by a fresh database"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("terminated connection to the replaced database: pid"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("application holder"), "{}", run.stdout);
    assert_eq!(s.pg.fingerprint("app"), before);
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn force_replaces_a_live_database_with_the_snapshot() {
    replace_live_database(&Setup::new(""));
}

#[test]
fn force_replaces_a_live_database_from_a_plain_sql_dump() {
    replace_live_database(&Setup::new("format = \"plain\""));
}

/// The file node of the snapshot's dump (`/db/app.dump`).
fn dump_node(env: &Env) -> Value {
    let tree = |id: &str| -> Value {
        serde_json::from_str(&env.run(&["cat", "tree", id]).ok().stdout).unwrap()
    };
    let snapshots = env.snapshots();
    let root = snapshots[0]["tree"].as_str().unwrap();
    let db = tree(root)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "db")
        .unwrap()["subtree"]
        .as_str()
        .unwrap()
        .to_string();
    tree(&db)["nodes"][0].clone()
}

/// Flips one byte of the stored blob `id` inside its pack file; returns the pack's id.
fn tamper_with_blob(env: &Env, id: &str) -> String {
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
                    return pack_id.to_string();
                }
            }
        }
    }
    panic!("blob {id} not found in any index");
}

#[test]
fn a_damaged_dump_blob_is_named_and_the_old_database_stays() {
    let s = Setup::new("");
    s.coffer(&["backup"]).ok();
    change_after_snapshot(&s.pg);
    let changed = s.pg.fingerprint("app");
    let node = dump_node(&s.env);
    assert_eq!(node["name"], "app.dump");
    // A blob in the middle of the dump: pg_restore has begun when it is reached.
    let content = node["content"].as_array().unwrap();
    let blob = content[content.len() / 2].as_str().unwrap().to_string();
    let pack = tamper_with_blob(&s.env, &blob);

    // Replacing: the old database is untouched, the fresh copy dropped.
    let run = s.coffer(&["restore", "latest", "--force"]).expect_code(1);
    for needle in [
        blob.as_str(),
        pack.as_str(),
        "/db/app.dump",
        "database app was not changed",
        "app__coffer_new was made for this restore and was dropped again",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
    assert!(
        !run.stderr.contains("no snapshot was saved"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("end of file"), "{}", run.stderr);
    assert_eq!(s.pg.fingerprint("app"), changed);
    assert_eq!(s.databases(), ["app", "postgres"]);

    // Into a new database: it is dropped again.
    let run = s
        .coffer(&["restore", "latest", "--pg-target", "fresh"])
        .expect_code(1);
    assert!(
        run.stderr
            .contains("database fresh did not exist before and was dropped again"),
        "{}",
        run.stderr
    );
    assert_eq!(s.databases(), ["app", "postgres"]);
}
