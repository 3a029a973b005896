//! Disaster recovery on a new host, against two real PostgreSQL clusters: the "old host" with the
//! app's roles (an owner role, a read-only role with GRANTs, a role with a password) and the
//! "new host" without them. Roles travel with the database (recorded at backup, without
//! passwords unless asked), a restore that would need missing roles refuses before changing
//! anything and names them, `--create-roles --owner app` gives a database the app's own role
//! can read and write, and drills on the new host report the roles it lacks (also as a role
//! without CREATEDB, in a database the operator created for it).
//!
//! The steps of docs/disaster-recovery.md are the commands of `the_documented_recovery`.

use coffer_e2e::{Env, PgCluster};
use serde_json::Value;
use std::path::PathBuf;

/// The app's roles, database and data on the old host.
const OLD_HOST: &str = "
CREATE ROLE app LOGIN;
CREATE ROLE app_ro NOLOGIN;
CREATE ROLE app_pw LOGIN PASSWORD 'hunter2-secret';
GRANT app_ro TO app_pw;
CREATE DATABASE app OWNER app;
";

const APP_SCHEMA: &str = "
SET ROLE app;
CREATE SCHEMA billing;
CREATE TYPE mood AS ENUM ('ok', 'bad');
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, feeling mood DEFAULT 'ok');
CREATE TABLE billing.invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  item int REFERENCES items(id), amount numeric);
CREATE VIEW item_names AS SELECT name FROM items;
CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM items';
INSERT INTO items(name) SELECT 'item ' || g FROM generate_series(1, 50) g;
INSERT INTO billing.invoices(item, amount) SELECT g, g * 1.5 FROM generate_series(1, 20) g;
GRANT USAGE ON SCHEMA billing TO app_ro;
GRANT SELECT ON ALL TABLES IN SCHEMA public, billing TO app_ro;
GRANT INSERT ON items TO app_pw;
";

struct Hosts {
    env: Env,
    old: PgCluster,
    new: PgCluster,
    config: PathBuf,
}

/// A URL reaching `pg` over its Unix socket as `user`.
fn url(pg: &PgCluster, user: &str, db: &str) -> String {
    format!("postgres://{user}@/{db}?host={}", pg.base.display())
}

impl Hosts {
    fn new(source_extra: &str) -> Hosts {
        let old = PgCluster::start();
        let new = PgCluster::start();
        old.psql("postgres", OLD_HOST);
        old.psql("app", APP_SCHEMA);
        let mut env = Env::new();
        env.extra_env = old.env();
        env.extra_env
            .push(("NEW_PG_URL".into(), url(&new, "postgres", "")));
        env.init();
        let config = env.path("coffer.toml");
        std::fs::write(
            &config,
            format!(
                "repository = \"{}\"\n\n[sources.db]\nkind = \"postgres\"\ndatabase = \"app\"\n{source_extra}\n",
                env.repo
            ),
        )
        .unwrap();
        Hosts {
            env,
            old,
            new,
            config,
        }
    }

    fn coffer_with(&self, config: &std::path::Path, args: &[&str]) -> coffer_e2e::Run {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        self.env.run(&all)
    }

    fn coffer(&self, args: &[&str]) -> coffer_e2e::Run {
        self.coffer_with(&self.config, args)
    }

    /// The snapshot document of `latest`, as `coffer cat` shows it.
    /// `coffer restore latest --pg-url-env NEW_PG_URL ARGS`: a restore onto the new host.
    fn restore_on_new(&self, args: &[&str]) -> coffer_e2e::Run {
        let mut all = vec!["restore", "latest", "--pg-url-env", "NEW_PG_URL"];
        all.extend_from_slice(args);
        self.coffer(&all)
    }

    fn latest(&self) -> (String, Value) {
        let run = self.coffer(&["cat", "snapshot", "latest"]).ok();
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        (run.stdout, v["snapshot"].clone())
    }
}

fn roles_of(pg: &PgCluster) -> Vec<String> {
    pg.psql(
        "postgres",
        "SELECT rolname FROM pg_roles WHERE rolname LIKE 'app%' ORDER BY 1;",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// psql as `user` (trust authentication), returning the output or the error.
fn psql_as(pg: &PgCluster, user: &str, db: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ])
        .envs(pg.env())
        .env("PGUSER", user)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The owners of every object of the app's schemas (relations, routines, types) and of the
/// database, other than `owner`.
fn not_owned_by(pg: &PgCluster, db: &str, owner: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT c.relname || ':' || pg_get_userbyid(c.relowner) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname IN ('public', 'billing') AND pg_get_userbyid(c.relowner) <> '{owner}' \
             UNION ALL SELECT p.proname || ':' || pg_get_userbyid(p.proowner) FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname IN ('public', 'billing') AND pg_get_userbyid(p.proowner) <> '{owner}' \
             UNION ALL SELECT t.typname || ':' || pg_get_userbyid(t.typowner) FROM pg_type t \
             JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE n.nspname IN ('public', 'billing') AND pg_get_userbyid(t.typowner) <> '{owner}' \
             UNION ALL SELECT 'schema ' || nspname || ':' || pg_get_userbyid(nspowner) \
             FROM pg_namespace WHERE nspname = 'billing' AND pg_get_userbyid(nspowner) <> '{owner}' \
             UNION ALL SELECT 'database:' || pg_get_userbyid(datdba) FROM pg_database \
             WHERE datname = current_database() AND pg_get_userbyid(datdba) <> '{owner}';"
        ),
    )
}

#[test]
fn roles_travel_with_the_database_and_a_new_host_gets_them() {
    let h = Hosts::new("");
    let before = h.old.fingerprint("app");
    h.coffer(&["backup"]).ok();

    // Recorded: the roles the dump needs, without passwords.
    let (text, snapshot) = h.latest();
    let pg = &snapshot["sources"][0]["postgres"];
    let names: Vec<&str> = pg["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "app_pw", "app_ro"], "{pg}");
    let app = &pg["roles"][0];
    assert_eq!(app["owner"], true);
    assert_eq!(app["database_owner"], true);
    assert_eq!(app["login"], true);
    assert_eq!(pg["roles"][2]["owner"], false);
    assert_eq!(pg["roles"][2]["acl"], true);
    assert_eq!(pg["roles"][2]["login"], false);
    assert_eq!(pg["roles"][1]["member_of"][0]["role"], "app_ro", "{pg}");
    assert!(pg.get("role_passwords").is_none(), "{pg}");
    for secret in ["SCRAM", "hunter2", "password"] {
        assert!(!text.contains(secret), "{secret} stored: {text}");
    }

    // Neither --create-roles nor --owner: refused before anything changes, the roles named.
    let run = h
        .coffer(&["restore", "latest", "--pg-url-env", "NEW_PG_URL"])
        .expect_code(16);
    assert!(
        run.stderr
            .contains("the server lacks the role(s) app, app_pw, app_ro that the dump needs"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--create-roles"), "{}", run.stderr);
    assert!(!h.new.database_exists("app"));
    assert!(roles_of(&h.new).is_empty());
    // --owner makes the owner roles unnecessary, not the roles in GRANTs; and the owner
    // must exist.
    let run = h.restore_on_new(&["--owner", "app"]).expect_code(16);
    assert!(
        run.stderr.contains("lacks the role(s) app, app_pw, app_ro"),
        "{}",
        run.stderr
    );
    let run = h
        .restore_on_new(&["--no-owner", "--no-acl", "--owner", "app"])
        .expect_code(2);
    assert!(run.stderr.contains("--no-owner"), "{}", run.stderr);
    // The dry run says the same and changes nothing.
    let run = h.restore_on_new(&["--dry-run"]).ok();
    assert!(
        run.stdout.contains("lacks the role(s) app, app_pw, app_ro"),
        "{}",
        run.stdout
    );
    assert!(!h.new.database_exists("app"));
    assert!(roles_of(&h.new).is_empty());

    // --no-owner --no-acl need no role at all: the restoring role owns everything.
    h.restore_on_new(&["--no-owner", "--no-acl", "--pg-target", "app_plain"])
        .ok();
    assert!(roles_of(&h.new).is_empty());
    let owners = not_owned_by(&h.new, "app_plain", "app");
    assert!(owners.contains("items:postgres"), "{owners}");
    assert!(owners.contains("database:postgres"), "{owners}");

    // --create-roles --owner app: the roles from the snapshot, the app's role owns everything.
    let run = h
        .restore_on_new(&["--create-roles", "--owner", "app", "--json"])
        .ok();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let db = &report["sources"][0]["report"];
    assert_eq!(
        db["created_roles"],
        serde_json::json!(["app", "app_pw", "app_ro"]),
        "{report}"
    );
    assert_eq!(db["owner"], "app");
    assert_eq!(report["mismatches"], serde_json::json!([]));
    assert_eq!(h.new.fingerprint("app"), before);
    assert_eq!(roles_of(&h.new), ["app", "app_pw", "app_ro"]);
    assert_eq!(not_owned_by(&h.new, "app", "app"), "");
    // No password came along; the membership did.
    assert_eq!(
        h.new.psql(
            "postgres",
            "SELECT rolname FROM pg_authid WHERE rolname LIKE 'app%' AND rolpassword IS NOT NULL;"
        ),
        ""
    );
    assert_eq!(
        h.new
            .psql(
                "postgres",
                "SELECT pg_has_role('app_pw', 'app_ro', 'member');"
            )
            .trim(),
        "t"
    );
    // With the roles there, a plain restore keeps the dump's owners, and the database it
    // creates gets the dumped database's owner.
    h.restore_on_new(&["--pg-target", "app_again"]).ok();
    assert_eq!(not_owned_by(&h.new, "app_again", "app"), "");
    // The app's own role reads and writes every table.
    let wrote = psql_as(
        &h.new,
        "app",
        "app",
        "INSERT INTO items(name) VALUES ('after the disaster'); \
         INSERT INTO billing.invoices(item, amount) VALUES (1, 9.5); \
         UPDATE items SET feeling = 'bad' WHERE id = 2; DELETE FROM billing.invoices WHERE id = 3; \
         SELECT (SELECT count(*) FROM items) || ' ' || (SELECT count(*) FROM billing.invoices) \
         || ' ' || (SELECT count(*) FROM item_names) || ' ' || item_count();",
    )
    .unwrap();
    assert_eq!(wrote, "51 20 51 51");
    // The read-only role reads (its GRANTs came along) and cannot write.
    assert_eq!(
        psql_as(
            &h.new,
            "postgres",
            "app",
            "SET ROLE app_ro; SELECT count(*) FROM billing.invoices;"
        )
        .unwrap(),
        "20"
    );
    let denied = psql_as(
        &h.new,
        "postgres",
        "app",
        "SET ROLE app_ro; INSERT INTO items(name) VALUES ('x');",
    )
    .unwrap_err();
    assert!(
        denied.contains("permission denied for table items"),
        "{denied}"
    );
    assert_eq!(
        psql_as(
            &h.new,
            "app_pw",
            "app",
            "INSERT INTO items(id, name) VALUES (1000, 'pw'); SELECT count(*) FROM billing.invoices;"
        )
        .unwrap(),
        "20"
    );
}

#[test]
fn passwords_are_stored_only_when_asked() {
    let h = Hosts::new("roles-with-passwords = true");
    h.coffer(&["backup"]).ok();
    let (_, snapshot) = h.latest();
    let pg = &snapshot["sources"][0]["postgres"];
    assert_eq!(pg["role_passwords"], true);
    let stored = pg["roles"][1]["password"].as_str().unwrap();
    let hash = h.old.psql(
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_pw';",
    );
    assert_eq!(stored, hash.trim());
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    assert!(pg["roles"][0].get("password").is_none(), "{pg}");
    // Listings, which end up in logs, do not show it.
    let listed = h.coffer(&["snapshots", "--json"]).ok().stdout;
    assert!(!listed.contains("SCRAM"), "{listed}");
    assert!(listed.contains("<redacted>"), "{listed}");

    // On the new host the role gets its password back: it can log in with it.
    h.restore_on_new(&["--create-roles", "--owner", "app"]).ok();
    assert_eq!(
        h.new
            .psql(
                "postgres",
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_pw';"
            )
            .trim(),
        hash.trim()
    );
}

#[test]
fn drills_on_a_server_without_the_roles_report_them() {
    let h = Hosts::new("");
    h.coffer(&["backup"]).ok();
    let run = h
        .coffer(&[
            "drill",
            "--no-record",
            "--json",
            "--pg-url-env",
            "NEW_PG_URL",
        ])
        .ok();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let db = &report["sources"][0];
    assert_eq!(
        db["missing_roles"],
        serde_json::json!(["app", "app_pw", "app_ro"]),
        "{report}"
    );
    assert!(
        db["checked"].as_str().unwrap().contains("--create-roles"),
        "{report}"
    );
    // The drill ran on the new host (its scratch database is gone again), not on the old.
    assert!(roles_of(&h.new).is_empty());
    let scratch = "SELECT count(*) FROM pg_database WHERE datname LIKE 'coffer_drill%';";
    assert_eq!(h.new.psql("postgres", scratch).trim(), "0");
    // Printed, too.
    let run = h
        .coffer(&["drill", "--no-record", "--pg-url-env", "NEW_PG_URL"])
        .ok();
    assert!(
        run.stdout.contains("lacks the role(s) app, app_pw, app_ro"),
        "{}",
        run.stdout
    );

    // On the old host every role exists: owners and privileges are restored as a real restore
    // would, here handed to the app's role ([drill] role).
    let owner_config = h.env.path("owner.toml");
    let base = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(&owner_config, format!("{base}\n[drill]\nrole = \"app\"\n")).unwrap();
    let run = h
        .coffer_with(&owner_config, &["drill", "--no-record", "--json"])
        .ok();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["sources"][0].get("missing_roles").is_none(),
        "{report}"
    );
    assert_eq!(report["sources"][0]["database"]["owner"], "app", "{report}");

    // A role without CREATEDB cannot make scratch databases ...
    h.new.psql(
        "postgres",
        "CREATE ROLE driller LOGIN NOCREATEDB; CREATE DATABASE app_drill OWNER driller;",
    );
    let mut env_url = h.env.extra_env.clone();
    env_url.push(("DRILL_URL".into(), url(&h.new, "driller", "postgres")));
    env_url.push(("OLD_DRILL_URL".into(), url(&h.old, "driller2", "postgres")));
    let drill_config = h.env.path("drill.toml");
    let base = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &drill_config,
        format!("{base}\n[drill]\nurl-env = \"DRILL_URL\"\ndatabase-prefix = \"dr\"\n"),
    )
    .unwrap();
    let run = |config: &std::path::Path| {
        let mut cmd = h.env.cmd(&[
            "--config",
            config.to_str().unwrap(),
            "drill",
            "--no-record",
            "--json",
        ]);
        cmd.envs(env_url.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&drill_config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("permission denied to create database"),
        "{out}"
    );
    // ... so it drills in the database the operator created for it, and empties it again.
    std::fs::write(
        &drill_config,
        format!("{base}\n[drill]\nurl-env = \"DRILL_URL\"\ndatabase = \"app_drill\"\n"),
    )
    .unwrap();
    let (code, out) = run(&drill_config);
    assert_eq!(code, Some(0), "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["sources"][0]["database"]["database"], "app_drill");
    assert_eq!(
        report["sources"][0]["missing_roles"],
        serde_json::json!(["app", "app_pw", "app_ro"])
    );
    assert!(h.new.database_exists("app_drill"));
    let tables = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast');";
    assert_eq!(h.new.psql("app_drill", tables).trim(), "0");
    assert_eq!(
        h.new
            .psql(
                "app_drill",
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'billing';"
            )
            .trim(),
        "0"
    );
    // Emptied as a new database is, and drillable again.
    assert_eq!(
        h.new
            .psql(
                "app_drill",
                "SELECT pg_get_userbyid(nspowner) || ' ' || nspacl::text FROM pg_namespace \
                 WHERE nspname = 'public';"
            )
            .trim(),
        "pg_database_owner {pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}"
    );
    let (code, out) = run(&drill_config);
    assert_eq!(code, Some(0), "{out}");
    // On the old host, where every role exists, a drilling role that is not a member of the
    // owning role checks the data with the objects left to itself.
    h.old.psql(
        "postgres",
        "CREATE ROLE driller2 LOGIN NOCREATEDB; CREATE DATABASE old_drill OWNER driller2;",
    );
    let old_config = h.env.path("old-drill.toml");
    std::fs::write(
        &old_config,
        format!("{base}\n[drill]\nurl-env = \"OLD_DRILL_URL\"\ndatabase = \"old_drill\"\n"),
    )
    .unwrap();
    let (code, out) = run(&old_config);
    assert_eq!(code, Some(0), "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(
        report["sources"][0].get("missing_roles").is_none(),
        "{report}"
    );
    // A drill database with tables is not touched.
    h.new.psql(
        "app_drill",
        "CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (1);",
    );
    let (code, out) = run(&drill_config);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("has 1 tables"), "{out}");
    assert_eq!(
        h.new
            .psql("app_drill", "SELECT count(*) FROM keep_me;")
            .trim(),
        "1"
    );
}

/// docs/disaster-recovery.md, step by step: the old host (database with its roles, uploads,
/// `.env`) backs up and is lost; a new host with an empty PostgreSQL and the same config gets
/// everything back and the app's own role works. The `docker compose` steps of the guide are
/// played by a fresh cluster (the database container) and psql as the app's role (the app and its
/// migrations); every `coffer` command is the guide's.
#[test]
fn the_documented_recovery() {
    let old = PgCluster::start();
    old.psql("postgres", OLD_HOST);
    old.psql("app", APP_SCHEMA);
    let env = Env::new();
    let app_dir = env.path("opt/app");
    std::fs::create_dir_all(app_dir.join("data/files/avatars")).unwrap();
    std::fs::write(app_dir.join("data/files/avatars/1.png"), b"\x89PNG fake").unwrap();
    std::fs::write(
        app_dir.join(".env"),
        "DATABASE_URL=postgres://app:s3cret@db/app\n",
    )
    .unwrap();
    let config = env.path("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\n\n[sources.db]\nkind = \"postgres\"\ndatabase = \"app\"\n\n\
             [sources.files]\nkind = \"path\"\npath = \"{}\"\n\n[sources.env]\nkind = \"path\"\npath = \"{}\"\n",
            env.repo,
            app_dir.join("data/files").display(),
            app_dir.join(".env").display()
        ),
    )
    .unwrap();
    let coffer = |pg: &PgCluster, args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut cmd = env.cmd(&all);
        cmd.envs(pg.env());
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "coffer {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    env.init();
    coffer(&old, &["backup"]);
    let before = old.fingerprint("app");

    // The server is gone.
    drop(old);
    std::fs::remove_dir_all(&app_dir).unwrap();

    // Step 4's empty server (docker compose up -d postgres), started first for the closure.
    let new = PgCluster::start();
    // Step 1: the repository opens. Step 2: the snapshot lists what it needs.
    let listed = coffer(&new, &["snapshots"]);
    assert!(listed.contains("1 snapshot(s)"), "{listed}");
    let details = coffer(&new, &["snapshots", "latest", "--details"]);
    assert!(
        details.contains("role app (owner, privileges, database owner, login)"),
        "{details}"
    );
    assert!(details.contains("role app_ro (privileges)"), "{details}");

    // Step 3: files and .env back in place.
    coffer(
        &new,
        &["restore", "latest", "--only", "files", "--only", "env"],
    );
    assert_eq!(
        std::fs::read(app_dir.join("data/files/avatars/1.png")).unwrap(),
        b"\x89PNG fake"
    );
    assert!(std::fs::read_to_string(app_dir.join(".env"))
        .unwrap()
        .contains("DATABASE_URL"));

    // Step 5: the dry run names the roles it would create.
    let dry = coffer(
        &new,
        &[
            "restore",
            "latest",
            "--only",
            "db",
            "--create-roles",
            "--owner",
            "app",
            "--dry-run",
        ],
    );
    assert!(
        dry.contains("lacks the role(s) app, app_pw, app_ro") && dry.contains("would be created"),
        "{dry}"
    );
    // Step 6: the database, its roles, the app's role owning everything.
    let restored = coffer(
        &new,
        &[
            "restore",
            "latest",
            "--only",
            "db",
            "--create-roles",
            "--owner",
            "app",
        ],
    );
    assert!(restored.contains("(created)"), "{restored}");
    assert_eq!(new.fingerprint("app"), before);
    assert_eq!(not_owned_by(&new, "app", "app"), "");
    // Step 7: the app role's password from .env (passwords were not stored).
    new.psql("postgres", "ALTER ROLE app PASSWORD 's3cret';");
    // Step 8 (migrations, as the app's role) and step 9 (verify as the app's role).
    psql_as(
        &new,
        "app",
        "app",
        "ALTER TABLE items ADD COLUMN note text; INSERT INTO items(name, note) VALUES ('x', 'y');",
    )
    .unwrap();
    assert_eq!(
        psql_as(&new, "app", "app", "SELECT count(*) FROM items;").unwrap(),
        "51"
    );
    // Step 10: backups run again from the new host.
    coffer(&new, &["backup"]);
    let listed = coffer(&new, &["snapshots"]);
    assert!(listed.contains("2 snapshot(s)"), "{listed}");
}

/// A plain-SQL dump runs as written: its roles must exist (`--create-roles`), `--no-owner` and
/// `--no-acl` are usage errors, and `--owner` hands every object to the app's role afterwards.
#[test]
fn plain_dumps_need_their_roles_and_take_an_owner_afterwards() {
    let h = Hosts::new("format = \"plain\"");
    let before = h.old.fingerprint("app");
    h.coffer(&["backup"]).ok();
    let run = h
        .restore_on_new(&["--no-acl", "--owner", "app"])
        .expect_code(2);
    assert!(run.stderr.contains("plain-SQL"), "{}", run.stderr);
    // --owner does not make a plain dump's owner roles unnecessary.
    let run = h.restore_on_new(&["--owner", "app"]).expect_code(16);
    assert!(
        run.stderr.contains("lacks the role(s) app, app_pw, app_ro"),
        "{}",
        run.stderr
    );
    assert!(!h.new.database_exists("app"));
    h.restore_on_new(&["--create-roles", "--owner", "app"]).ok();
    assert_eq!(h.new.fingerprint("app"), before);
    assert_eq!(not_owned_by(&h.new, "app", "app"), "");
    assert_eq!(
        psql_as(
            &h.new,
            "app",
            "app",
            "INSERT INTO billing.invoices(item, amount) VALUES (2, 1); \
             SELECT count(*) FROM billing.invoices;"
        )
        .unwrap(),
        "21"
    );
}

/// `pg-restore-args` reach pg_restore (here `--schema=public` leaves the billing schema out, so
/// the row counts do not match), and arguments that would break Coffer's own are refused when
/// the config is read, naming them; `roles-with-passwords` needs a superuser.
#[test]
fn restore_args_reach_pg_restore_and_cannot_break_it() {
    let h = Hosts::new("pg-restore-args = [\"--schema=public\"]");
    h.coffer(&["backup"]).ok();
    let run = h.restore_on_new(&["--create-roles"]).expect_code(1);
    assert!(
        run.stderr
            .contains("table billing.invoices: 20 rows in the snapshot, missing restored"),
        "{}",
        run.stderr
    );
    assert!(h.new.database_exists("app"));

    let text = std::fs::read_to_string(&h.config)
        .unwrap()
        .replace("--schema=public", "--dbname=elsewhere");
    std::fs::write(&h.config, text).unwrap();
    let run = h.coffer(&["restore", "latest", "--dry-run"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("[sources.db] pg-restore-args: --dbname is set by Coffer"),
        "{}",
        run.stderr
    );

    // Password hashes are only for a superuser's backup.
    let config = h.env.path("pw.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\n\n[sources.db]\nkind = \"postgres\"\ndatabase = \"app\"\nroles-with-passwords = true\n",
            h.env.repo
        ),
    )
    .unwrap();
    let mut cmd = h.env.cmd(&["--config", config.to_str().unwrap(), "backup"]);
    cmd.env("PGUSER", "app");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("roles-with-passwords = true needs a superuser"),
        "{stderr}"
    );
    assert_eq!(h.env.snapshots().len(), 1);
}
