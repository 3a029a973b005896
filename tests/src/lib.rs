//! The end-to-end test harness: runs the real `coffer` binary against throwaway repositories.
//!
//! The binary is the one cargo built for this test run (`target/<profile>/coffer`, found next to
//! the test executable). Every test gets its own temporary directory; nothing outside it is
//! touched. Passwords reach the binary through the environment, never argv, as for users.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Path of the `coffer` binary built alongside this test executable.
pub fn coffer_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/coffer
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("coffer");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace` so the coffer binary is built",
        bin.display()
    );
    bin
}

/// A scratch area with a repository location and a password, plus helpers to run coffer.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: String,
    pub password: String,
}

/// The result of one coffer run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw_stdout: out.stdout,
        }
    }

    /// Panics with the output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        self.expect_code(0)
    }
}

impl Env {
    /// A new scratch area whose repository is a local directory inside it (not yet created).
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo").to_string_lossy().into_owned();
        Env {
            dir,
            repo,
            password: "correct horse battery staple".into(),
        }
    }

    /// A path inside the scratch area.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A coffer command with the repository and password set in the environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(coffer_bin());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("COFFER_REPO", &self.repo)
            .env("COFFER_PASSWORD", &self.password)
            .stdin(Stdio::null());
        c
    }

    /// Runs coffer and captures its output.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("spawn coffer"))
    }

    /// Runs coffer with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait");
        let _ = writer.join();
        Run::from(out)
    }

    /// `coffer init` with cheap KDF parameters (tests only: real users get 64 MiB / 3 passes).
    pub fn init(&self) {
        self.run(&[
            "init",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ])
        .ok();
    }

    /// `coffer snapshots --json`, parsed.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["snapshots", "--json"]).ok();
        serde_json::from_str(&out.stdout).expect("snapshots json")
    }

    /// Total bytes of every file below the repository directory.
    pub fn repo_size(&self) -> u64 {
        dir_size(Path::new(&self.repo))
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// Sum of file sizes below `path`.
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if m.is_dir() {
                total += dir_size(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Deterministic pseudo-random bytes (SplitMix64), so failures reproduce.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}
