//! Roles travel with the database. At backup, the roles a dump needs (the owners of its objects,
//! the roles in its privileges, the database's owner) are read from the catalogs in the dump's
//! own transaction and recorded with their attributes and memberships (never their passwords
//! unless asked). At restore, the target server is asked which of them it lacks before anything
//! is changed; [`RoleOptions`] decides which are needed at all, and `--create-roles` creates the
//! missing ones from the recorded definitions.
//!
//! `--owner ROLE` restores with `pg_restore --no-owner` and then hands every restored object
//! (and the database) to ROLE ([`REASSIGN_SQL`]), so ROLE can read and write every table.

use super::{quote_ident, quote_literal, DumpFormat, PgSource};
use crate::error::{Error, Result};
use crate::format::snapshot::RoleRecord;

/// How ownership and privileges are restored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleOptions {
    /// Create the needed roles the target server lacks from the recorded definitions.
    pub create_roles: bool,
    /// Every restored object (and the database) ends up owned by this role.
    pub owner: Option<String>,
    /// Restored objects are owned by the restoring role (`pg_restore --no-owner`).
    pub no_owner: bool,
    /// Privileges (GRANT/REVOKE) are not restored (`pg_restore --no-acl`).
    pub no_acl: bool,
}

impl RoleOptions {
    /// Refuses combinations that make no sense, and options a plain-SQL dump cannot honour
    /// (its statements run as written: owners and grants included).
    pub fn validate(&self, format: DumpFormat, source: &str) -> Result<()> {
        if self.owner.is_some() && self.no_owner {
            return Err(Error::InvalidInput(
                "--owner and --no-owner exclude each other: --owner ROLE gives every object to \
                 ROLE, --no-owner to the restoring role"
                    .into(),
            ));
        }
        if let Some(owner) = &self.owner {
            if owner.is_empty() || owner.starts_with("pg_") {
                return Err(Error::InvalidInput(format!(
                    "--owner {owner:?}: not a role that can own a restored database"
                )));
            }
        }
        if format == DumpFormat::Plain && (self.no_owner || self.no_acl) {
            return Err(Error::InvalidInput(format!(
                "source {source} is a plain-SQL dump, whose statements run as written (owners \
                 and grants included): --no-owner and --no-acl need a custom-format dump \
                 (format = \"custom\"); use --create-roles, and --owner ROLE to hand the objects \
                 to one role afterwards"
            )));
        }
        Ok(())
    }

    /// Whether `role` is needed by a restore with these options of a dump in `format`.
    pub fn needs(&self, role: &RoleRecord, format: DumpFormat) -> bool {
        if format == DumpFormat::Plain {
            // Every statement runs as written.
            return role.owner || role.acl;
        }
        let owners_kept = !self.no_owner && self.owner.is_none();
        (role.owner && owners_kept) || (role.acl && !self.no_acl)
    }

    /// The recorded roles a restore with these options needs, in name order; with `--owner`,
    /// that role too if it is recorded.
    pub fn needed<'a>(&self, roles: &'a [RoleRecord], format: DumpFormat) -> Vec<&'a RoleRecord> {
        roles
            .iter()
            .filter(|r| self.needs(r, format) || self.owner.as_deref() == Some(r.name.as_str()))
            .collect()
    }
}

/// The user schemas (`n` is `pg_namespace`): what pg_dump dumps.
const USER_NS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// The query that lists the roles the current database's dump needs, one JSON object a line.
/// Run in the dump's transaction. With `passwords`, the hashes are read from `pg_authid`
/// (superusers only).
pub fn roles_sql(passwords: bool) -> String {
    let in_schema = |table: &str, oid: &str, owner: &str, acl: &str, ns: &str| {
        format!(
            "SELECT '{table}'::regclass, o.{oid}, o.{owner}, {acl} FROM {table} o \
             JOIN pg_namespace n ON n.oid = o.{ns} WHERE {USER_NS}"
        )
    };
    let mut objects = vec![
        in_schema("pg_class", "oid", "relowner", "o.relacl", "relnamespace"),
        in_schema("pg_proc", "oid", "proowner", "o.proacl", "pronamespace"),
        in_schema("pg_type", "oid", "typowner", "o.typacl", "typnamespace"),
    ];
    for (table, owner, ns) in [
        ("pg_collation", "collowner", "collnamespace"),
        ("pg_conversion", "conowner", "connamespace"),
        ("pg_operator", "oprowner", "oprnamespace"),
        ("pg_opfamily", "opfowner", "opfnamespace"),
        ("pg_opclass", "opcowner", "opcnamespace"),
        ("pg_ts_dict", "dictowner", "dictnamespace"),
        ("pg_ts_config", "cfgowner", "cfgnamespace"),
        ("pg_statistic_ext", "stxowner", "stxnamespace"),
    ] {
        objects.push(in_schema(table, "oid", owner, "NULL::aclitem[]", ns));
    }
    objects.push(format!(
        "SELECT 'pg_namespace'::regclass, n.oid, n.nspowner, n.nspacl FROM pg_namespace n \
         WHERE {USER_NS}"
    ));
    for (table, owner, acl) in [
        ("pg_largeobject_metadata", "lomowner", "o.lomacl"),
        ("pg_foreign_data_wrapper", "fdwowner", "o.fdwacl"),
        ("pg_foreign_server", "srvowner", "o.srvacl"),
        ("pg_event_trigger", "evtowner", "NULL::aclitem[]"),
        ("pg_publication", "pubowner", "NULL::aclitem[]"),
    ] {
        objects.push(format!(
            "SELECT '{table}'::regclass, o.oid, o.{owner}, {acl} FROM {table} o"
        ));
    }
    let password = if passwords {
        "(SELECT p.rolpassword FROM pg_authid p WHERE p.oid = r.oid)"
    } else {
        "NULL::text"
    };
    format!(
        "WITH objs(classid, objid, owner, acl) AS ({objects}), \
         dumped AS (SELECT * FROM objs o WHERE NOT EXISTS (SELECT 1 FROM pg_depend d \
           WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype = 'e')), \
         needed(oid, owner, acl, dbowner) AS ( \
           SELECT owner, true, false, false FROM dumped \
           UNION ALL SELECT a.grantee, false, true, false FROM dumped, aclexplode(dumped.acl) a \
           UNION ALL SELECT a.grantor, false, true, false FROM dumped, aclexplode(dumped.acl) a \
           UNION ALL SELECT a.grantee, false, true, false FROM pg_attribute att \
             JOIN pg_class c ON c.oid = att.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace, \
             aclexplode(att.attacl) a WHERE att.attacl IS NOT NULL AND {USER_NS} \
           UNION ALL SELECT d.defaclrole, false, true, false FROM pg_default_acl d \
           UNION ALL SELECT a.grantee, false, true, false FROM pg_default_acl d, \
             aclexplode(d.defaclacl) a \
           UNION ALL SELECT datdba, false, false, true FROM pg_database \
             WHERE datname = current_database()), \
         roles AS (SELECT x.oid, bool_or(x.owner) AS owner, bool_or(x.acl) AS acl, \
           bool_or(x.dbowner) AS dbowner FROM needed x JOIN pg_roles r ON r.oid = x.oid \
           WHERE r.rolname NOT LIKE 'pg\\_%' GROUP BY x.oid) \
         SELECT jsonb_build_object('name', r.rolname, 'owner', x.owner, 'acl', x.acl, \
           'database_owner', x.dbowner, 'superuser', r.rolsuper, 'inherit', r.rolinherit, \
           'createrole', r.rolcreaterole, 'createdb', r.rolcreatedb, 'login', r.rolcanlogin, \
           'replication', r.rolreplication, 'bypassrls', r.rolbypassrls, \
           'connection_limit', r.rolconnlimit, 'valid_until', r.rolvaliduntil::text, \
           'password', {password}, \
           'member_of', coalesce((SELECT jsonb_agg(jsonb_build_object('role', g.rolname, \
             'admin', m.admin_option) ORDER BY g.rolname) FROM pg_auth_members m \
             JOIN roles y ON y.oid = m.roleid JOIN pg_roles g ON g.oid = m.roleid \
             WHERE m.member = r.oid), '[]'::jsonb)) \
         FROM roles x JOIN pg_roles r ON r.oid = x.oid ORDER BY r.rolname;",
        objects = objects.join(" UNION ALL ")
    )
}

/// The recorded roles from the lines of [`roles_sql`] (nulls read as absent).
pub fn parse_roles(lines: &[String]) -> Result<Vec<RoleRecord>> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut value: serde_json::Value = serde_json::from_str(l).map_err(|e| {
                Error::InvalidInput(format!("psql returned an unexpected role line: {e}"))
            })?;
            if let Some(map) = value.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            serde_json::from_value(value).map_err(|e| {
                Error::InvalidInput(format!("psql returned an unexpected role line: {e}"))
            })
        })
        .collect()
}

/// The `CREATE ROLE` statement that recreates `role` as recorded (its password only if one was
/// stored).
pub fn create_role_sql(role: &RoleRecord) -> String {
    let flag = |on: bool, word: &str| {
        if on {
            word.to_string()
        } else {
            format!("NO{word}")
        }
    };
    let mut sql = format!(
        "CREATE ROLE {} WITH {} {} {} {} {} {} {} CONNECTION LIMIT {}",
        quote_ident(&role.name),
        flag(role.superuser, "SUPERUSER"),
        flag(role.inherit, "INHERIT"),
        flag(role.createrole, "CREATEROLE"),
        flag(role.createdb, "CREATEDB"),
        flag(role.login, "LOGIN"),
        flag(role.replication, "REPLICATION"),
        flag(role.bypassrls, "BYPASSRLS"),
        role.connection_limit
    );
    if let Some(password) = &role.password {
        sql.push_str(&format!(" PASSWORD {}", quote_literal(password)));
    }
    if let Some(until) = &role.valid_until {
        sql.push_str(&format!(" VALID UNTIL {}", quote_literal(until)));
    }
    sql.push(';');
    sql
}

/// Every restored object handed to the role in the psql variable `owner`, run in the restored
/// database after the restore: the database itself, its schemas, relations, routines, types
/// and the other owned objects of the dump (objects of extensions stay with the extension).
pub const REASSIGN_SQL: &str = r#"DO $coffer$
DECLARE
  r record;
  target text := current_setting('coffer.owner');
BEGIN
  IF (SELECT pg_get_userbyid(datdba) FROM pg_database
      WHERE datname = current_database()) <> target THEN
    EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), target);
  END IF;
  FOR r IN
    SELECT format('ALTER %s %s OWNER TO %I',
      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
        WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      c.oid::regclass, target) AS stmt
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND @USER_NS@
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
        AND d.objid = c.oid AND d.deptype IN ('e', 'i', 'a'))
      AND pg_get_userbyid(c.relowner) <> target
    UNION ALL
    SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, target)
    FROM pg_namespace n WHERE @USER_NS@
      AND pg_get_userbyid(n.nspowner) NOT IN (target, 'pg_database_owner')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
        AND d.objid = n.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, target)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE @USER_NS@ AND pg_get_userbyid(p.proowner) <> target
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
        AND d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER %s %s OWNER TO %I', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
      t.oid::regtype, target)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE @USER_NS@ AND pg_get_userbyid(t.typowner) <> target
      AND (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'c'
        AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
        AND d.objid = t.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER LARGE OBJECT %s OWNER TO %I', l.oid, target)
    FROM pg_largeobject_metadata l WHERE pg_get_userbyid(l.lomowner) <> target
  LOOP
    EXECUTE r.stmt;
  END LOOP;
END
$coffer$;
"#;

/// [`REASSIGN_SQL`] with the schema filter filled in, preceded by the owner's name.
pub fn reassign_sql(owner: &str) -> String {
    format!(
        "SET coffer.owner = {};\n{}",
        quote_literal(owner),
        REASSIGN_SQL.replace("@USER_NS@", &format!("({USER_NS})"))
    )
}

/// pg_restore options Coffer sets or that would break the restore it runs: refused in
/// `pg-restore-args`.
const RESERVED_RESTORE_ARGS: &[&str] = &[
    "-d",
    "--dbname",
    "-f",
    "--file",
    "-F",
    "--format",
    "-l",
    "--list",
    "-L",
    "--use-list",
    "-1",
    "--single-transaction",
    "-e",
    "--exit-on-error",
    "-c",
    "--clean",
    "--if-exists",
    "-C",
    "--create",
    "-j",
    "--jobs",
    "-h",
    "--host",
    "-p",
    "--port",
    "-U",
    "--username",
    "-W",
    "--password",
    "-w",
    "--no-password",
    "-O",
    "--no-owner",
    "-x",
    "--no-privileges",
    "--no-acl",
    "--role",
    "-a",
    "--data-only",
    "-s",
    "--schema-only",
    "-V",
    "--version",
    "-?",
    "--help",
    "-v",
    "--verbose",
];

/// Checks the `pg-restore-args` of source `source`: each an option (starting with `-`, values
/// joined with `=`: `--schema=app`), none of the options Coffer sets itself or that would change
/// what a restore is (where it goes, its one transaction, its owners and privileges: use
/// `--owner`, `--no-owner`, `--no-acl`).
pub fn validate_restore_args(source: &str, args: &[String]) -> Result<()> {
    for arg in args {
        if !arg.starts_with('-') {
            return Err(Error::InvalidInput(format!(
                "[sources.{source}] pg-restore-args: {arg:?} is not an option; give values \
                 joined to their option with = (--schema=app)"
            )));
        }
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        // A short option with its value attached (`-dapp`) is the short option.
        let short = if !name.starts_with("--") && name.len() > 2 {
            &name[..2]
        } else {
            name
        };
        if RESERVED_RESTORE_ARGS.contains(&name) || RESERVED_RESTORE_ARGS.contains(&short) {
            return Err(Error::InvalidInput(format!(
                "[sources.{source}] pg-restore-args: {name} is set by Coffer or would change \
                 where and how it restores (owners and privileges: use --owner, --no-owner, \
                 --no-acl on the command line)"
            )));
        }
    }
    Ok(())
}

/// `e` with every stored password hash of `roles` replaced: psql may quote the statement that
/// failed.
fn without_passwords(e: Error, roles: &[&RoleRecord]) -> Error {
    let scrub = |mut text: String| {
        for hash in roles.iter().filter_map(|r| r.password.as_deref()) {
            if !hash.is_empty() {
                text = text.replace(hash, "<redacted>");
            }
        }
        text
    };
    match e {
        Error::ClientCommand {
            command,
            status,
            stderr,
        } => Error::ClientCommand {
            command,
            status: scrub(status),
            stderr: scrub(stderr),
        },
        other => other,
    }
}

impl PgSource {
    /// Which of `names` the server lacks.
    pub fn missing_roles(&self, names: &[&str]) -> Result<Vec<String>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = names.iter().map(|n| quote_literal(n)).collect();
        let sql = format!(
            "SELECT w.name FROM unnest(ARRAY[{}]::text[]) AS w(name) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = w.name) ORDER BY 1;\n",
            list.join(", ")
        );
        Ok(self
            .psql("postgres", &sql)?
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Creates `create` (recorded roles the server lacks) in one transaction, then grants the
    /// recorded memberships of every role in `recorded` that involve a created role. Returns
    /// the created roles' names.
    pub fn create_roles(
        &self,
        create: &[&RoleRecord],
        recorded: &[RoleRecord],
    ) -> Result<Vec<String>> {
        if create.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = String::from("BEGIN;\n");
        for role in create {
            sql.push_str(&create_role_sql(role));
            sql.push('\n');
        }
        let created = |name: &str| create.iter().any(|r| r.name == name);
        let exists = |name: &str| recorded.iter().any(|r| r.name == name);
        for member in recorded {
            for m in &member.member_of {
                if !(created(&member.name) || created(&m.role)) || !exists(&m.role) {
                    continue;
                }
                if !created(&member.name) && !self.role_exists(&member.name)? {
                    continue;
                }
                if !created(&m.role) && !self.role_exists(&m.role)? {
                    continue;
                }
                sql.push_str(&format!(
                    "GRANT {} TO {}{};\n",
                    quote_ident(&m.role),
                    quote_ident(&member.name),
                    if m.admin { " WITH ADMIN OPTION" } else { "" }
                ));
            }
        }
        sql.push_str("COMMIT;\n");
        self.psql("postgres", &sql)
            .map_err(|e| without_passwords(e, create))?;
        Ok(create.iter().map(|r| r.name.clone()).collect())
    }

    fn role_exists(&self, name: &str) -> Result<bool> {
        Ok(self.missing_roles(&[name])?.is_empty())
    }

    /// Hands every restored object of `database` (and the database) to `owner`
    /// (`reassign_sql`), in one transaction.
    pub fn reassign_to(&self, database: &str, owner: &str) -> Result<()> {
        let sql = format!("BEGIN;\n{}COMMIT;\n", reassign_sql(owner));
        self.psql(database, &sql).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::Membership;

    fn role(name: &str, owner: bool, acl: bool) -> RoleRecord {
        RoleRecord {
            name: name.into(),
            owner,
            acl,
            connection_limit: -1,
            ..RoleRecord::default()
        }
    }

    #[test]
    fn which_roles_a_restore_needs() {
        let roles = [
            role("app", true, false),
            role("ro", false, true),
            role("dbo", false, false),
        ];
        let names = |o: &RoleOptions, f| {
            o.needed(&roles, f)
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        let keep = RoleOptions::default();
        assert_eq!(names(&keep, DumpFormat::Custom), ["app", "ro"]);
        let no_owner = RoleOptions {
            no_owner: true,
            ..RoleOptions::default()
        };
        assert_eq!(names(&no_owner, DumpFormat::Custom), ["ro"]);
        let owner = RoleOptions {
            owner: Some("dbo".into()),
            no_acl: true,
            ..RoleOptions::default()
        };
        assert_eq!(names(&owner, DumpFormat::Custom), ["dbo"]);
        // A plain dump runs its statements as written.
        assert_eq!(names(&owner, DumpFormat::Plain), ["app", "ro", "dbo"]);
    }

    #[test]
    fn senseless_combinations_are_refused() {
        let both = RoleOptions {
            owner: Some("app".into()),
            no_owner: true,
            ..RoleOptions::default()
        };
        assert!(both.validate(DumpFormat::Custom, "db").is_err());
        let no_acl = RoleOptions {
            no_acl: true,
            ..RoleOptions::default()
        };
        assert!(no_acl.validate(DumpFormat::Custom, "db").is_ok());
        let e = no_acl.validate(DumpFormat::Plain, "db").unwrap_err();
        assert!(e.to_string().contains("plain-SQL"), "{e}");
        let owner = RoleOptions {
            owner: Some("app".into()),
            ..RoleOptions::default()
        };
        assert!(owner.validate(DumpFormat::Plain, "db").is_ok());
    }

    #[test]
    fn create_statements_quote_and_carry_a_password_only_when_stored() {
        let mut r = role("we\"ird", true, false);
        r.login = true;
        r.member_of = vec![Membership {
            role: "ro".into(),
            admin: false,
        }];
        assert_eq!(
            create_role_sql(&r),
            "CREATE ROLE \"we\"\"ird\" WITH NOSUPERUSER NOINHERIT NOCREATEROLE NOCREATEDB LOGIN \
             NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1;"
        );
        r.password = Some("SCRAM-SHA-256$4096:x'y".into());
        assert!(!format!("{r:?}").contains("SCRAM"), "{r:?}");
        r.valid_until = Some("2030-01-01 00:00:00+00".into());
        assert!(create_role_sql(&r).ends_with(
            " PASSWORD 'SCRAM-SHA-256$4096:x''y' VALID UNTIL '2030-01-01 00:00:00+00';"
        ));
    }

    #[test]
    fn role_lines_parse_with_nulls_absent() {
        let line = r#"{"acl": true, "name": "ro", "inherit": true, "owner": false, "password": null, "valid_until": null, "connection_limit": 3, "member_of": [{"role": "g", "admin": true}]}"#;
        let roles = parse_roles(&[line.to_string(), String::new()]).unwrap();
        assert_eq!(roles.len(), 1);
        assert_eq!(roles[0].name, "ro");
        assert!(roles[0].acl && roles[0].inherit && !roles[0].owner);
        assert_eq!(roles[0].password, None);
        assert_eq!(roles[0].connection_limit, 3);
        assert!(roles[0].member_of[0].admin);
    }

    #[test]
    fn restore_args_cannot_break_coffers_own() {
        let ok = |a: &[&str]| {
            validate_restore_args("db", &a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(ok(&["--schema=app", "--no-comments", "--disable-triggers"]).is_ok());
        for bad in [
            &["--dbname=x"][..],
            &["-dx"],
            &["--no-owner"],
            &["--role=x"],
            &["--clean"],
            &["app"],
            &["-j", "4"],
        ] {
            let e = ok(bad).unwrap_err().to_string();
            assert!(e.contains("pg-restore-args"), "{e}");
        }
    }
}
