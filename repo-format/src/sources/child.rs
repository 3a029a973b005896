//! The one way Coffer starts and runs another program (source commands, `pg_dump`, `psql`,
//! `pg_restore`, command prefixes, password commands).
//!
//! [`command`] builds a [`Command`] whose environment is Coffer's own minus every variable whose
//! name starts with `COFFER_`. Those variables hold the repository password (`COFFER_PASSWORD`,
//! `COFFER_FROM_PASSWORD`) or say where to get it (`COFFER_PASSWORD_FILE`,
//! `COFFER_PASSWORD_COMMAND`); no child needs them, and a child that inherited them could leak
//! them (core dumps, `/proc/PID/environ` of a long-lived helper, a logging wrapper). Everything
//! else (`PATH`, `HOME`, `PG*`, `AWS_*` ...) passes through unchanged. A user who wants a child to
//! see such a variable on purpose names it in the command itself (`env COFFER_X=... program`).
//!
//! [`Running::spawn`] runs it: stderr is drained on a thread that keeps only its last
//! [`STDERR_TAIL`] bytes for error messages (so the child never blocks on a full pipe and a
//! chatty child cannot fill memory); a child given a cancel flag runs in its own process group,
//! and when the flag is set the whole group gets SIGTERM, then SIGKILL after [`STOP_GRACE`] (a
//! shell's children would otherwise keep the output pipe open); [`Running::wait`] returns the
//! exit status (code or signal) with the stderr tail, and [`Exit::check`] turns a failure into
//! [`Error::SourceCommand`]. A child without a cancel flag stays in Coffer's process group, so a
//! terminal's Ctrl-C reaches it as it reaches Coffer.

use crate::error::Error;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// Bytes of a child's stderr kept for error messages (the last ones).
pub const STDERR_TAIL: usize = 16 * 1024;

/// How long a stopped child has between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often the cancel watcher looks at the flag.
const POLL: Duration = Duration::from_millis(50);

/// A running child: its stderr tail being collected and, if it was given a cancel flag, a
/// watcher that stops its process group when the flag is set.
pub struct Running {
    child: Child,
    /// Whether the child leads its own process group (it was given a cancel flag).
    own_group: bool,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// Set once the child was waited for (or abandoned): the watcher then ends.
    done: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts `command` with the given stdin and stdout and a piped stderr. With `cancel`, the
    /// child runs in its own process group, and setting the flag stops that whole group (SIGTERM,
    /// then SIGKILL after [`STOP_GRACE`]).
    pub fn spawn(
        mut command: Command,
        stdin: Stdio,
        stdout: Stdio,
        cancel: Option<Arc<AtomicBool>>,
    ) -> std::io::Result<Running> {
        if cancel.is_some() {
            command.process_group(0);
        }
        let mut child = command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .map(|stderr| std::thread::spawn(move || read_tail(stderr, STDERR_TAIL)));
        let done = Arc::new(AtomicBool::new(false));
        let own_group = cancel.is_some();
        let watcher = cancel.map(|cancel| {
            let done = done.clone();
            let pid = child.id();
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if cancel.load(Ordering::Relaxed) {
                        stop_group(pid, &done);
                        return;
                    }
                    std::thread::sleep(POLL);
                }
            })
        });
        Ok(Running {
            child,
            own_group,
            stderr,
            done,
            watcher,
        })
    }

    /// The child's stdin, if it was piped (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's stdout, if it was piped (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Stops the child (its whole group if it has one): SIGTERM, then SIGKILL if it is still
    /// running after [`STOP_GRACE`]. It still has to be waited for.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        self.signal(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(POLL);
        }
        self.signal(pid, nix::sys::signal::Signal::SIGKILL);
    }

    fn pid(&self) -> Option<nix::unistd::Pid> {
        i32::try_from(self.child.id())
            .ok()
            .map(nix::unistd::Pid::from_raw)
    }

    fn signal(&self, pid: nix::unistd::Pid, signal: nix::sys::signal::Signal) {
        let _ = if self.own_group {
            nix::sys::signal::killpg(pid, signal)
        } else {
            nix::sys::signal::kill(pid, signal)
        };
    }

    /// Waits for the child to end; returns its exit status and the tail of its stderr. The
    /// stderr tail is handed out by the first call only (later calls return the status alone).
    pub fn wait(&mut self) -> std::io::Result<Exit> {
        let status = self.child.wait();
        self.done.store(true, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        let status = status?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .map(|buf| String::from_utf8_lossy(&buf).into_owned())
            .unwrap_or_default();
        Ok(Exit { status, stderr })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // An abandoned child is not stopped here (its callers close its input, which ends it);
        // the watcher just ends.
        self.done.store(true, Ordering::Relaxed);
    }
}

/// SIGTERM to the process group `pid` leads; SIGKILL if it was not waited for (`done`) within
/// [`STOP_GRACE`].
fn stop_group(pid: u32, done: &AtomicBool) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let group = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if done.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
}

/// Reads `reader` to its end, keeping only the last `keep` bytes.
fn read_tail(mut reader: impl Read, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

/// How a child ended, and the tail of its stderr.
#[derive(Debug)]
pub struct Exit {
    status: ExitStatus,
    /// The last [`STDERR_TAIL`] bytes of its stderr (lossy UTF-8).
    pub stderr: String,
}

impl Exit {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Its exit code, if it exited (rather than being killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Ok if it succeeded; otherwise [`Error::SourceCommand`] naming `command` (as shown to the
    /// user) with its status and stderr tail.
    pub fn check(self, command: &str) -> crate::error::Result<()> {
        if self.success() {
            return Ok(());
        }
        let status = self.status.to_string();
        Err(self.failure(command, status))
    }

    /// [`Error::SourceCommand`] naming `command` with `status` (a description) and the stderr tail.
    pub fn failure(self, command: &str, status: String) -> Error {
        Error::SourceCommand {
            command: command.to_string(),
            status,
            stderr: self.stderr,
        }
    }
}

/// The exit status as the system words it: `exit status: 3`, `signal: 15 (SIGTERM)`.
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.status.fmt(f)
    }
}

/// [`Error::SourceCommand`] for a child that could not be started; `not_found_hint` is added when
/// the program was not found.
pub fn start_error(command: &str, e: std::io::Error, not_found_hint: &str) -> Error {
    let hint = if e.kind() == std::io::ErrorKind::NotFound {
        not_found_hint
    } else {
        ""
    };
    Error::SourceCommand {
        command: command.to_string(),
        status: format!("could not start: {e}{hint}"),
        stderr: String::new(),
    }
}

/// How a child run with a deadline ([`run_with_deadline`]) ended.
#[derive(Debug)]
pub enum Deadline {
    /// It ended by itself: its exit status (code or signal).
    Exited(ExitStatus),
    /// It was still running when the time was up, and was stopped.
    TimedOut,
    /// The cancel flag was set (Ctrl-C, SIGTERM), and it was stopped.
    Interrupted,
}

/// Runs `command` to its end with stdin from `/dev/null` and its stdout and stderr both on
/// Coffer's stderr (never on Coffer's stdout, which may carry JSON), in its own process group.
/// When `timeout` has passed or `cancel` is set, the whole group is stopped: SIGTERM, then
/// SIGKILL after [`STOP_GRACE`]. For hooks: commands whose output is for the operator to read.
pub fn run_with_deadline(
    mut command: Command,
    timeout: Duration,
    cancel: &AtomicBool,
) -> std::io::Result<Deadline> {
    use std::os::fd::AsFd;
    let stdout = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    let ended = loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Deadline::Exited(status));
        }
        if cancel.load(Ordering::Relaxed) {
            break Deadline::Interrupted;
        }
        if started.elapsed() >= timeout {
            break Deadline::TimedOut;
        }
        std::thread::sleep(POLL);
    };
    // The whole group: a shell's children too. SIGKILL follows whether or not the leader
    // ended on SIGTERM, so a child that ignores it does not outlive the hook.
    if let Ok(pid) = i32::try_from(child.id()) {
        let group = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && child.try_wait()?.is_none() {
            std::thread::sleep(POLL);
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    child.wait()?;
    Ok(ended)
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
    fn sh(script: &str) -> Command {
        let mut c = command("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn a_failing_child_reports_its_code_and_stderr() {
        let mut child = Running::spawn(
            sh("echo oops >&2; exit 3"),
            Stdio::null(),
            Stdio::null(),
            None,
        )
        .unwrap();
        let exit = child.wait().unwrap();
        assert!(!exit.success());
        assert_eq!(exit.code(), Some(3));
        assert_eq!(exit.signal(), None);
        assert_eq!(exit.stderr, "oops\n");
        assert_eq!(exit.to_string(), "exit status: 3");
        match exit.check("sh -c ...") {
            Err(Error::SourceCommand {
                command,
                status,
                stderr,
            }) => {
                assert_eq!(command, "sh -c ...");
                assert_eq!(status, "exit status: 3");
                assert_eq!(stderr, "oops\n");
            }
            other => panic!("expected SourceCommand, got {other:?}"),
        }
        let mut ok = Running::spawn(sh("true"), Stdio::null(), Stdio::null(), None).unwrap();
        assert!(ok.wait().unwrap().check("true").is_ok());
    }

    #[test]
    fn a_program_that_does_not_exist_is_named_with_the_hint() {
        let e = Running::spawn(
            command("/nonexistent/coffer-no-such-program"),
            Stdio::null(),
            Stdio::null(),
            None,
        )
        .err()
        .unwrap();
        let err = start_error("no-such", e, " (hint)");
        let text = err.to_string();
        assert!(text.contains("`no-such`"), "{text}");
        assert!(text.contains("could not start"), "{text}");
        assert!(text.ends_with("(hint)); no snapshot was saved"), "{text}");
    }

    #[test]
    fn only_the_tail_of_a_long_stderr_is_kept() {
        // 40,000 lines of "line N": far more than the tail, ending with a marker.
        let script = "i=0; while [ $i -lt 40000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; \
                      echo END >&2; exit 1";
        let mut child = Running::spawn(sh(script), Stdio::null(), Stdio::null(), None).unwrap();
        let exit = child.wait().unwrap();
        assert_eq!(exit.code(), Some(1));
        assert_eq!(exit.stderr.len(), STDERR_TAIL);
        assert!(exit.stderr.ends_with("line 39999\nEND\n"));
        assert!(!exit.stderr.contains("line 0\n"));
    }

    #[test]
    fn the_tail_reader_keeps_the_last_bytes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(read_tail(&data[..], 1000), &data[data.len() - 1000..]);
        assert_eq!(read_tail(&data[..10], 1000), &data[..10]);
        assert_eq!(read_tail(&b""[..], 1000), b"");
    }

    #[test]
    fn a_child_with_a_deadline_ends_stops_or_is_interrupted() {
        let no = AtomicBool::new(false);
        let long = Duration::from_secs(30);
        match run_with_deadline(sh("exit 3"), long, &no).unwrap() {
            Deadline::Exited(status) => assert_eq!(status.code(), Some(3)),
            other => panic!("{other:?}"),
        }
        match run_with_deadline(sh("true"), long, &no).unwrap() {
            Deadline::Exited(status) => assert!(status.success()),
            other => panic!("{other:?}"),
        }
        // A shell whose child ignores SIGTERM: both gone at the deadline plus the grace.
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("pid");
        let script = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 30' ; sleep 30",
            pid_file.display()
        );
        let started = Instant::now();
        let ended = run_with_deadline(sh(&script), Duration::from_millis(300), &no).unwrap();
        assert!(matches!(ended, Deadline::TimedOut), "{ended:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "the hook's child {pid} outlived it");
        let cancel = AtomicBool::new(true);
        let ended = run_with_deadline(sh("sleep 30"), long, &cancel).unwrap();
        assert!(matches!(ended, Deadline::Interrupted), "{ended:?}");
    }

    #[test]
    fn cancel_stops_the_whole_process_group() {
        let cancel = Arc::new(AtomicBool::new(false));
        // The shell waits on a grandchild that holds stdout open: only stopping the group ends it.
        let mut child = Running::spawn(
            sh("sleep 30 & wait"),
            Stdio::null(),
            Stdio::piped(),
            Some(cancel.clone()),
        )
        .unwrap();
        let mut stdout = child.take_stdout().unwrap();
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        cancel.store(true, Ordering::Relaxed);
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).unwrap(); // EOF: the grandchild is gone too
        let exit = child.wait().unwrap();
        assert_eq!(exit.signal(), Some(15), "{exit}");
        assert_eq!(exit.code(), None);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut child = Running::spawn(
            sh("trap '' TERM; echo ready; while :; do sleep 0.1; done"),
            Stdio::null(),
            Stdio::piped(),
            Some(cancel.clone()),
        )
        .unwrap();
        let mut stdout = child.take_stdout().unwrap();
        let mut ready = [0u8; 6];
        stdout.read_exact(&mut ready).unwrap(); // the trap is set
        let started = Instant::now();
        cancel.store(true, Ordering::Relaxed);
        let exit = child.wait().unwrap();
        assert_eq!(exit.signal(), Some(9), "{exit}");
        assert!(started.elapsed() >= STOP_GRACE);
        assert!(started.elapsed() < STOP_GRACE + Duration::from_secs(5));
    }

    #[test]
    fn stop_ends_a_child_that_ignores_sigterm() {
        let mut child = Running::spawn(
            sh("trap '' TERM; echo ready; while :; do sleep 0.1; done"),
            Stdio::null(),
            Stdio::piped(),
            None,
        )
        .unwrap();
        let mut stdout = child.take_stdout().unwrap();
        let mut ready = [0u8; 6];
        stdout.read_exact(&mut ready).unwrap();
        child.stop();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        let mut quick = Running::spawn(sh("sleep 30"), Stdio::null(), Stdio::null(), None).unwrap();
        quick.stop();
        // Ended by SIGTERM, not by the SIGKILL that follows the grace: a child that honours
        // SIGTERM is never killed. (No wall-clock bound: under load it flaked.)
        assert_eq!(quick.wait().unwrap().signal(), Some(15));
    }
}
