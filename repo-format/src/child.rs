//! The one way Coffer starts another program (source commands, `pg_dump`, `psql`,
//! `pg_restore`, command prefixes, password commands): a [`Command`] whose environment is
//! Coffer's own minus every variable whose name starts with `COFFER_`.
//!
//! Those variables hold the repository password (`COFFER_PASSWORD`, `COFFER_FROM_PASSWORD`) or
//! say where to get it (`COFFER_PASSWORD_FILE`, `COFFER_PASSWORD_COMMAND`); no child needs them,
//! and a child that inherited them could leak them (core dumps, `/proc/PID/environ` of a
//! long-lived helper, a logging wrapper). Everything else (`PATH`, `HOME`, `PG*`, `AWS_*` ...)
//! passes through unchanged. A user who wants a child to see such a variable on purpose names it
//! in the command itself (`env COFFER_X=... program`).

use std::ffi::{OsStr, OsString};
use std::process::Command;

/// The prefix of the environment variables kept from children.
pub const OWN_PREFIX: &str = "COFFER_";

/// Whether an environment variable of this name is Coffer's own (never passed to a child).
pub fn is_own_variable(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(OWN_PREFIX.as_bytes())
}

/// A command for `program` that does not inherit Coffer's own (`COFFER_*`) variables. Build
/// it right before spawning it: the environment is read here.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    command_without_own(program, std::env::vars_os().map(|(name, _)| name))
}

/// A command for `program` that removes those of `names` that are Coffer's own.
fn command_without_own(
    program: impl AsRef<OsStr>,
    names: impl IntoIterator<Item = OsString>,
) -> Command {
    #[allow(clippy::disallowed_methods)] // The one place allowed to (see clippy.toml).
    let mut command = Command::new(program);
    for name in names.into_iter().filter(|name| is_own_variable(name)) {
        command.env_remove(name);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_variables_are_recognised_by_their_prefix() {
        assert!(is_own_variable(OsStr::new("COFFER_PASSWORD")));
        assert!(is_own_variable(OsStr::new("COFFER_FROM_PASSWORD")));
        assert!(is_own_variable(OsStr::new("COFFER_")));
        assert!(!is_own_variable(OsStr::new("coffer_password")));
        assert!(!is_own_variable(OsStr::new("XCOFFER_PASSWORD")));
        assert!(!is_own_variable(OsStr::new("COFFER")));
        assert!(!is_own_variable(OsStr::new("PGPASSWORD")));
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            // Names that are not UTF-8 are still matched by their bytes.
            assert!(is_own_variable(OsStr::from_bytes(b"COFFER_\xff")));
            assert!(!is_own_variable(OsStr::from_bytes(b"\xffCOFFER_")));
        }
    }

    #[test]
    fn the_command_removes_every_own_variable_and_nothing_else() {
        let names = [
            "PATH",
            "COFFER_PASSWORD",
            "PGPASSWORD",
            "COFFER_REPO",
            "HOME",
        ];
        let command = command_without_own("true", names.iter().map(OsString::from));
        let changes: Vec<(&OsStr, Option<&OsStr>)> = command.get_envs().collect();
        assert_eq!(
            changes,
            vec![
                (OsStr::new("COFFER_PASSWORD"), None),
                (OsStr::new("COFFER_REPO"), None)
            ]
        );
    }
}
