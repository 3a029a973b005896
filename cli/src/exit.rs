//! Exit codes (documented in `--help`, README and docs/cli.md) and the mapping from errors.

use coffer_repo::Error;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
/// The backup was saved but some source files could not be read (they are left out) or kept
/// changing while being read (they are stored as read); or the restore is done but some entries
/// could not be recreated (device nodes without root).
pub const PARTIAL: u8 = 3;
pub const NO_REPOSITORY: u8 = 10;
pub const LOCKED: u8 = 11;
pub const WRONG_PASSWORD: u8 = 12;
/// Another run of the same configuration holds the run lock and `--no-wait` was given.
pub const RUN_LOCKED: u8 = 14;
/// A before-hook (`[hooks]` before-backup, before-restore) failed or timed out: the operation
/// did not start, nothing was saved or changed.
pub const HOOK_FAILED: u8 = 15;
/// A database restore was refused before anything was changed: the target server lacks roles
/// the dump needs (named), and neither --create-roles nor --owner/--no-owner/--no-acl were given.
pub const MISSING_ROLES: u8 = 16;
pub const INTERRUPTED: u8 = 130;

/// The help text's table of exit codes.
pub const TABLE: &str = "Exit codes:
  0    success
  1    error (nothing was saved or changed unless the message says so)
  2    usage error (bad flags or arguments)
  3    backup saved, but some source files could not be read or kept changing
       while being read (they are listed); restore done, but some entries could
       not be recreated (device nodes without root; they are listed)
  10   no repository at the given location
  11   repository locked by a maintenance operation
  12   wrong password
  14   another run of this command and configuration is in progress (--no-wait)
  15   a before-backup or before-restore hook failed or timed out: nothing was
       saved or changed (a failing after-hook exits 1)
  16   restore refused, nothing changed: the database server lacks roles the
       dump needs (named; --create-roles, --owner, --no-owner, --no-acl)
  130  interrupted (Ctrl-C / SIGTERM); nothing partial was committed";

fn repo_error(e: &anyhow::Error) -> Option<&Error> {
    e.chain().find_map(|c| c.downcast_ref::<Error>())
}

pub fn code_for(e: &anyhow::Error) -> u8 {
    match repo_error(e) {
        Some(Error::NoRepository { .. }) => NO_REPOSITORY,
        Some(Error::Locked(_)) => LOCKED,
        Some(Error::WrongPassword) => WRONG_PASSWORD,
        Some(Error::Interrupted) => INTERRUPTED,
        Some(Error::MissingRoles { .. }) => MISSING_ROLES,
        _ => {
            if e.chain()
                .any(|c| c.downcast_ref::<crate::runlock::RunLocked>().is_some())
            {
                RUN_LOCKED
            } else if e
                .chain()
                .any(|c| c.downcast_ref::<crate::hooks::HookFailed>().is_some())
            {
                HOOK_FAILED
            } else if e.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
                USAGE
            } else {
                ERROR
            }
        }
    }
}

/// The message, with guidance for the errors users meet most. The error's own text may quote
/// stored names or file names: its control characters are escaped and its continuation lines
/// indented (`crate::escape::error_lines`).
pub fn describe(e: &anyhow::Error) -> String {
    let mut msg = crate::escape::error_lines(&format!("{e:#}"));
    match repo_error(e) {
        Some(Error::NoRepository { .. }) => {
            msg.push_str("\n  create one with `coffer init`, or check --repo / COFFER_REPO")
        }
        Some(Error::WrongPassword) => msg.push_str(
            "\n  the repository was not changed; check COFFER_PASSWORD, COFFER_PASSWORD_FILE or COFFER_PASSWORD_COMMAND",
        ),
        Some(Error::RestoreStopped { damaged: true, .. }) => msg.push_str(
            "\n  the files listed as restored are complete; run the restore again with --skip-damaged to restore every file whose data is intact",
        ),
        Some(Error::Corrupt { .. }) => {
            msg.push_str("\n  the repository's data is damaged or incomplete here; nothing was changed")
        }
        Some(Error::Missing { .. }) => msg.push_str(
            "\n  the repository's data is damaged or incomplete here; nothing was changed\n  run `coffer check` to see what it reaches; after a lost pack, `coffer repair index` then `coffer repair snapshots` recover (docs/maintenance.md)",
        ),
        _ => {}
    }
    msg
}

/// Writing to a closed pipe (`coffer dump ... | head`) is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<Error>(), Some(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A usage error found after parsing (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Fails with a usage error (exit code 2).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_and_retention_errors_keep_their_exit_codes() {
        let internal = anyhow::Error::new(Error::Internal("a broken invariant".into()));
        assert_eq!(code_for(&internal), ERROR);
        assert!(describe(&internal).contains("this is a bug in Coffer, please report it"));
        // Retention errors from the library exit 1, as when they were wrapped in InvalidInput;
        // forget turns a policy it refuses into a usage error (2) itself.
        assert_eq!(code_for(&anyhow::Error::new(Error::NoKeepRules)), ERROR);
        assert_eq!(code_for(&usage(Error::NoKeepRules.to_string())), USAGE);
    }
}
