//! Hooks: the operator's own command lines from `[hooks]` (docs/config.md), run through
//! `sh -c` before and after a backup or a restore (`docker compose stop app`, `docker compose
//! run app migrate`).
//!
//! - A before-hook runs once the repository is open and the snapshot (restore) is known, right
//!   before anything is saved or changed. If it fails, times out or is interrupted, the
//!   operation does not start: nothing is saved or changed, the after-hook does not run, and
//!   Coffer exits [`crate::exit::HOOK_FAILED`] (130 when interrupted).
//! - The after-hook runs whenever the operation started (the before-hook passed or there is
//!   none), whether it succeeded or not, so an app stopped before a backup is started again
//!   after a failed one; `COFFER_STATUS` and `COFFER_EXIT_CODE` say how it went. An after-hook
//!   that fails is reported and makes the exit code 1 when it would have been 0 or 3 (the
//!   backup is saved, the restore done); an operation's own error stays the error.
//! - Each hook runs with a timeout (`timeout`, default 5 minutes), in its own process group,
//!   stopped as a group (SIGTERM, then SIGKILL) when the time is up or on Ctrl-C. An after-hook
//!   following an interrupted operation still runs, bounded by the timeout alone.
//! - Its output (stdout and stderr) goes to Coffer's stderr, never into `--json` output.
//! - Its environment is Coffer's minus every `COFFER_*` variable (`sources::child::command`:
//!   never the password), plus `COFFER_HOOK` (the hook's name), `COFFER_SOURCES` (source
//!   names, separated by spaces), `COFFER_SNAPSHOT_ID` (the snapshot's full id, once known),
//!   `COFFER_RESTORE_TARGET` (restore: the `--target` directory, empty when the sources go back
//!   where they came from), and for after-hooks `COFFER_STATUS` (`success`, `partial`,
//!   `failure`, `interrupted`) and `COFFER_EXIT_CODE`.
//!
//! The command line itself is never printed (it may hold a token); messages name the hook.

use crate::config::HooksConfig;
use coffer_repo::sources::child::{self, Deadline};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A before-hook that failed, timed out or could not start: the operation did not start
/// (exit code [`crate::exit::HOOK_FAILED`]).
#[derive(Debug)]
pub struct HookFailed(pub String);

impl std::fmt::Display for HookFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HookFailed {}

/// The hooks of one run and what the after-hook needs to know.
pub struct Hooks<'a> {
    config: Option<&'a HooksConfig>,
    timeout: Duration,
    cancel: &'a AtomicBool,
    quiet: bool,
    /// `backup` or `restore`.
    operation: &'static str,
    /// The variables every hook of this run gets (`COFFER_SOURCES` ...).
    env: Vec<(&'static str, String)>,
    /// The operation started: its before-hook passed (or there is none).
    started: bool,
}

impl<'a> Hooks<'a> {
    /// The hooks of `operation` (`backup` or `restore`) from the configuration, if any.
    pub fn new(ctx: &'a crate::commands::Context_, operation: &'static str) -> Hooks<'a> {
        let config = ctx.config.as_ref().and_then(|l| l.config.hooks.as_ref());
        let timeout = config
            .and_then(|c| c.timeout().ok())
            .unwrap_or(crate::config::DEFAULT_HOOK_TIMEOUT);
        Hooks {
            config,
            timeout,
            cancel: ctx.cancel.as_ref(),
            quiet: ctx.global.quiet,
            operation,
            env: Vec::new(),
            started: false,
        }
    }

    /// Sets a variable every later hook of this run gets.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.env.retain(|(n, _)| *n != name);
        self.env.push((name, value.into()));
    }

    /// Runs the before-hook. `Err` (a [`HookFailed`], or an interruption) means: do not start;
    /// nothing was saved or changed.
    pub fn before(&mut self) -> anyhow::Result<()> {
        let name = format!("before-{}", self.operation);
        if let Some(command) = self.config.and_then(|c| c.command(&name)) {
            match self.run(&name, command, &[], self.cancel) {
                Ok(()) => {}
                Err(Failure::Interrupted) => {
                    return Err(anyhow::Error::new(coffer_repo::Error::Interrupted).context(
                        format!(
                            "the {name} hook was interrupted; the {} did not start, nothing was saved or changed",
                            self.operation
                        ),
                    ))
                }
                Err(Failure::Other(why)) => {
                    return Err(anyhow::Error::new(HookFailed(format!(
                        "the {name} hook {why}; the {} did not start, nothing was saved or changed",
                        self.operation
                    ))))
                }
            }
        }
        self.started = true;
        Ok(())
    }

    /// Runs the after-hook if the operation started, with its outcome, and returns the exit
    /// code or error of the whole run: the operation's, or 1 in place of 0 or 3 when the
    /// after-hook failed.
    pub fn after(&self, outcome: anyhow::Result<u8>) -> anyhow::Result<u8> {
        let name = format!("after-{}", self.operation);
        let Some(command) = self
            .config
            .and_then(|c| c.command(&name))
            .filter(|_| self.started)
        else {
            return outcome;
        };
        let code = match &outcome {
            Ok(code) => *code,
            Err(e) => crate::exit::code_for(e),
        };
        let status = match code {
            crate::exit::OK => "success",
            crate::exit::PARTIAL => "partial",
            crate::exit::INTERRUPTED => "interrupted",
            _ => "failure",
        };
        let extra = [
            ("COFFER_STATUS", status.to_string()),
            ("COFFER_EXIT_CODE", code.to_string()),
        ];
        // After an interruption the hook still runs (to start the app again, say), bounded by
        // its timeout alone.
        let fresh = AtomicBool::new(false);
        let cancel = if self.cancel.load(Ordering::Relaxed) {
            &fresh
        } else {
            self.cancel
        };
        let why = match self.run(&name, command, &extra, cancel) {
            Ok(()) => return outcome,
            Err(Failure::Interrupted) => "was interrupted".to_string(),
            Err(Failure::Other(why)) => why,
        };
        let done = match self.operation {
            "backup" => "the backup was saved",
            _ => "the restore is done",
        };
        match outcome {
            Ok(crate::exit::OK | crate::exit::PARTIAL) => {
                eprintln!("coffer: the {name} hook {why} ({done}); exit 1");
                Ok(crate::exit::ERROR)
            }
            Ok(code) => {
                eprintln!("coffer: the {name} hook {why} too");
                Ok(code)
            }
            Err(e) => {
                eprintln!("coffer: the {name} hook {why} too");
                Err(e)
            }
        }
    }

    /// Runs one hook; `Err` says how it failed.
    fn run(
        &self,
        name: &str,
        command: &str,
        extra: &[(&str, String)],
        cancel: &AtomicBool,
    ) -> Result<(), Failure> {
        if !self.quiet {
            eprintln!("coffer: running the {name} hook");
        }
        let mut cmd = child::command("sh");
        cmd.arg("-c").arg(command);
        cmd.env("COFFER_HOOK", name);
        for (var, value) in self
            .env
            .iter()
            .map(|(n, v)| (*n, v))
            .chain(extra.iter().map(|(n, v)| (*n, v)))
        {
            cmd.env(var, value);
        }
        match child::run_with_deadline(cmd, self.timeout, cancel) {
            Err(e) => Err(Failure::Other(format!("could not start: {e}"))),
            Ok(Deadline::Interrupted) => Err(Failure::Interrupted),
            Ok(Deadline::TimedOut) => Err(Failure::Other(format!(
                "did not finish within its timeout of {} s and was stopped",
                self.timeout.as_secs()
            ))),
            Ok(Deadline::Exited(status)) if status.success() => Ok(()),
            Ok(Deadline::Exited(status)) => Err(Failure::Other(format!("failed ({status})"))),
        }
    }
}

/// How a hook failed.
enum Failure {
    Interrupted,
    Other(String),
}
