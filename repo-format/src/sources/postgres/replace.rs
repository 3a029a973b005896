//! Replacing a live database: the snapshot is restored into a fresh database beside it, and only
//! when that restore has committed and its row counts match is the fresh one renamed into the
//! old one's place (the old one renamed aside, then dropped). Until that rename the old
//! database is never touched, so any failure before it leaves the old database as it was.
//!
//! The rename needs the old database to have no other connections: they are waited for (up to
//! the caller's `wait`), then terminated, and named in the report. The fresh database is created
//! with the old one's owner, encoding, collation and database-level grants, so that the app's
//! user can connect to the replaced database as before.

use super::{quote_ident, quote_literal, PgSource};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

/// How often the connections to the old database are looked at while waiting for them to end.
const POLL: Duration = Duration::from_millis(200);

/// How long terminated connections are given to end before the rename is tried again.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// Another session connected to a database, as `pg_stat_activity` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub pid: i64,
    /// The session's role (empty when the restoring role may not see it).
    pub user: String,
    pub application: String,
    /// `idle`, `active`, `idle in transaction` ...
    pub state: String,
}

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        let mut parts = Vec::new();
        if !self.user.is_empty() {
            parts.push(format!("user {}", self.user));
        }
        if !self.application.is_empty() {
            parts.push(format!("application {}", self.application));
        }
        if !self.state.is_empty() {
            parts.push(self.state.clone());
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// `name` with `suffix`, the name cut (at a character boundary) so that the whole stays within
/// PostgreSQL's identifier length: PostgreSQL would otherwise cut the suffix off itself.
pub fn derived_name(name: &str, suffix: &str) -> String {
    let mut keep = MAX_NAME.saturating_sub(suffix.len()).min(name.len());
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &name[..keep])
}

/// The database a replacement is restored into before it is renamed into place.
pub fn fresh_name(database: &str) -> String {
    derived_name(database, "__coffer_new")
}

/// The name the old database has between the rename and its drop (and keeps if the drop fails).
pub fn previous_name(database: &str) -> String {
    derived_name(database, "__coffer_old")
}

impl PgSource {
    /// Refuses, with the reason, a replacement this role cannot finish: renaming a database
    /// needs its owner (or a superuser) with CREATEDB, and the two working names must be free.
    /// Called before anything is changed.
    pub fn check_replace(&self, database: &str) -> Result<()> {
        let sql = format!(
            "SELECT CASE WHEN NOT (r.rolsuper OR r.rolcreatedb) THEN 'createdb' \
             WHEN NOT pg_has_role(d.datdba, 'USAGE') THEN 'owner:' || pg_get_userbyid(d.datdba) \
             ELSE 'ok' END FROM pg_roles r, pg_database d \
             WHERE r.rolname = current_user AND d.datname = {};\n",
            quote_literal(database)
        );
        let lines = self.psql("postgres", &sql)?;
        let answer = lines.iter().map(|l| l.trim()).find(|l| !l.is_empty());
        let refuse = |why: String| {
            Err(Error::InvalidInput(format!(
                "cannot replace database {database}: {why}; nothing was changed"
            )))
        };
        match answer {
            Some("ok") => {}
            Some("createdb") => {
                return refuse(
                    "the restoring role has neither CREATEDB nor superuser, which renaming a \
                     database needs (restore with --pg-target into a database the operator \
                     created, or connect as the database's owner with CREATEDB)"
                        .into(),
                )
            }
            Some(owner) => {
                return refuse(format!(
                    "it is owned by {}, and the restoring role is neither that role nor a \
                     superuser (connect as its owner)",
                    owner.trim_start_matches("owner:")
                ))
            }
            None => return refuse("it does not exist".into()),
        }
        for name in [fresh_name(database), previous_name(database)] {
            if self.database_exists(&name)? {
                return refuse(format!(
                    "database {name} exists, left by an interrupted replacement; look at it and \
                     drop it (DROP DATABASE {})",
                    quote_ident(&name)
                ));
            }
        }
        Ok(())
    }

    /// Creates `fresh` like `database`: same owner, encoding, collation and character type (from
    /// `template0`, as `pg_restore` expects), and the same database-level grants.
    pub fn create_like(&self, fresh: &str, database: &str) -> Result<()> {
        let old = quote_literal(database);
        let new = quote_ident(fresh);
        let sql = format!(
            "SELECT format('CREATE DATABASE %I WITH TEMPLATE template0 OWNER %I ENCODING %L \
             LC_COLLATE %L LC_CTYPE %L;', {fresh}, pg_get_userbyid(datdba), \
             pg_encoding_to_char(encoding), datcollate, datctype) \
             FROM pg_database WHERE datname = {old};\n\
             SELECT 'REVOKE ALL ON DATABASE ' || {quoted} || ' FROM PUBLIC;' \
             FROM pg_database WHERE datname = {old} AND datacl IS NOT NULL;\n\
             SELECT format('GRANT %s ON DATABASE %s TO %s%s;', a.privilege_type, {quoted}, \
             CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
             CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = {old} \
             AND a.grantee <> d.datdba;\n",
            fresh = quote_literal(fresh),
            quoted = quote_literal(&new),
        );
        let statements = self.psql("postgres", &sql)?;
        let mut statements = statements.iter().filter(|l| !l.trim().is_empty());
        let create = statements
            .next()
            .ok_or_else(|| Error::InvalidInput(format!("database {database} does not exist")))?;
        // CREATE DATABASE cannot run in a transaction block: one psql call each.
        self.psql("postgres", &format!("{create}\n"))?;
        let grants: String = statements.map(|s| format!("{s}\n")).collect();
        if !grants.is_empty() {
            if let Err(e) = self.psql("postgres", &grants) {
                let _ = self.drop_database(fresh);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The other sessions connected to `database`.
    pub fn sessions(&self, database: &str) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT json_build_object('pid', pid, 'user', coalesce(usename::text, ''), \
             'application', coalesce(application_name, ''), 'state', coalesce(state, '')) \
             FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid() ORDER BY pid;\n",
            quote_literal(database)
        );
        self.psql("postgres", &sql)?
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| {
                    Error::InvalidInput(format!("psql returned an unexpected session line: {e}"))
                })
            })
            .collect()
    }

    /// Swaps `fresh` in for `database`: waits up to `wait` for the other sessions on `database`
    /// to end, terminates those still there, then renames `database` aside and `fresh` into its
    /// place in one transaction, and drops the old one. Returns the terminated sessions and, if
    /// the old database could not be dropped, the name it is kept under. An error before the
    /// rename leaves both databases as they were.
    pub fn swap_in(
        &self,
        fresh: &str,
        database: &str,
        wait: Duration,
    ) -> Result<(Vec<Session>, Option<String>)> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !self.sessions(database)?.is_empty() {
            std::thread::sleep(POLL);
        }
        let previous = previous_name(database);
        let rename = format!(
            "BEGIN;\nALTER DATABASE {old} RENAME TO {aside};\nALTER DATABASE {new} RENAME TO {old};\nCOMMIT;\n",
            old = quote_ident(database),
            aside = quote_ident(&previous),
            new = quote_ident(fresh),
        );
        let mut terminated: Vec<Session> = Vec::new();
        let grace = Instant::now() + TERMINATE_GRACE;
        loop {
            let sessions = self.terminate(database)?;
            for s in sessions {
                if !terminated.iter().any(|t| t.pid == s.pid) {
                    terminated.push(s);
                }
            }
            match self.psql("postgres", &rename) {
                Ok(_) => break,
                Err(Error::ClientCommand { stderr, .. })
                    if stderr.contains("being accessed by other users")
                        && Instant::now() < grace =>
                {
                    std::thread::sleep(POLL);
                }
                Err(e) => {
                    let left: Vec<String> = self
                        .sessions(database)
                        .unwrap_or_default()
                        .iter()
                        .map(Session::to_string)
                        .collect();
                    if left.is_empty() {
                        return Err(e);
                    }
                    return Err(Error::InvalidInput(format!(
                        "database {database} still has other connections that could not be \
                         terminated ({}): {e}",
                        left.join("; ")
                    )));
                }
            }
        }
        let kept = match self.drop_database(&previous) {
            Ok(()) => None,
            Err(_) => Some(previous),
        };
        Ok((terminated, kept))
    }

    /// Terminates the other sessions on `database`; returns them.
    fn terminate(&self, database: &str) -> Result<Vec<Session>> {
        let sessions = self.sessions(database)?;
        if sessions.is_empty() {
            return Ok(sessions);
        }
        let pids: Vec<String> = sessions.iter().map(|s| s.pid.to_string()).collect();
        self.psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({}) \
                 AND datname = {};\n",
                pids.join(", "),
                quote_literal(database)
            ),
        )?;
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_names_stay_within_the_identifier_length() {
        assert_eq!(fresh_name("app"), "app__coffer_new");
        assert_eq!(previous_name("app"), "app__coffer_old");
        let long = "d".repeat(70);
        let name = fresh_name(&long);
        assert_eq!(name.len(), MAX_NAME);
        assert!(name.ends_with("__coffer_new"));
        // A multi-byte character is not cut in half.
        let wide = "é".repeat(40);
        let name = previous_name(&wide);
        assert!(
            name.len() <= MAX_NAME && name.ends_with("__coffer_old"),
            "{name}"
        );
    }

    #[test]
    fn sessions_are_shown_with_what_is_known() {
        let s = Session {
            pid: 42,
            user: "app".into(),
            application: "psql".into(),
            state: "idle in transaction".into(),
        };
        assert_eq!(
            s.to_string(),
            "pid 42 (user app, application psql, idle in transaction)"
        );
        let hidden = Session {
            pid: 7,
            user: String::new(),
            application: String::new(),
            state: String::new(),
        };
        assert_eq!(hidden.to_string(), "pid 7");
    }
}
