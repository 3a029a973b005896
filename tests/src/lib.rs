//! The end-to-end test harness: runs the real `coffer` binary against throwaway repositories.
//!
//! The binary is the one cargo built for this test run (`target/<profile>/coffer`, found next to
//! the test executable). Every test gets its own temporary directory; nothing outside it is
//! touched. Passwords reach the binary through the environment, never argv, as for users.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// More environment for every coffer run (a PostgreSQL cluster's `PGHOST`, an S3 endpoint).
    pub extra_env: Vec<(String, String)>,
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
            extra_env: Vec::new(),
        }
    }

    /// A new scratch area whose repository is `s3://<fresh bucket>/repo` on `server`.
    pub fn s3(server: &MotoServer) -> Env {
        let mut env = Env::new();
        env.repo = format!("s3://{}/repo", server.bucket());
        env.extra_env = MotoServer::env_for(&server.endpoint);
        env
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
            // No `--json` status lines, so that a command's JSON output is one document; the
            // progress tests turn them on through `extra_env`.
            .env("COFFER_PROGRESS_FPS", "0")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
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
        self.init_with(&[]);
    }

    /// [`Env::init`] with more options (`--pack-size-mib 20`, ...).
    pub fn init_with(&self, options: &[&str]) {
        let mut args = vec![
            "init",
            "--insecure-kdf",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ];
        args.extend_from_slice(options);
        self.run(&args).ok();
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

/// A throwaway PostgreSQL cluster: its own data directory and Unix socket under /tmp, no TCP
/// port, stopped and removed on drop. As root, the server programs run as `postgres` through
/// `runuser` (initdb and postgres refuse root).
pub struct PgCluster {
    pub base: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// The PostgreSQL server programs' directory (the newest under /usr/lib/postgresql), or a panic
/// that says what to install.
pub fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").exists() && d.join("pgbench").exists());
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    let bin = dirs.pop().unwrap_or_else(|| {
        panic!(
            "the PostgreSQL tests need a PostgreSQL server, its client and pgbench: \
             on Debian/Ubuntu run `apt-get install -y postgresql-15 postgresql-client-15 \
             postgresql-contrib` (initdb, pg_ctl and pgbench go to /usr/lib/postgresql/15/bin; \
             psql, pg_dump and pg_restore must be on PATH)"
        )
    });
    for client in ["psql", "pg_dump", "pg_restore"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(client).exists()))
            .unwrap_or(false);
        assert!(
            found,
            "{client} is not on PATH: install the PostgreSQL client (apt-get install -y postgresql-client-15)"
        );
    }
    bin
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl PgCluster {
    /// initdb and start; ~2 s.
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let base = tempfile::Builder::new()
            .prefix("pgtest.")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(&base)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "chown postgres {} failed (is there a postgres user?)",
                base.display()
            );
        }
        let cluster = PgCluster {
            base,
            bin,
            as_postgres,
        };
        let data = cluster.base.join("data");
        cluster.server_program(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-N",
            ],
        );
        let log = cluster.base.join("server.log");
        let options = format!(
            "-k {} -p 5432 -c listen_addresses='' -c fsync=off -c synchronous_commit=off",
            cluster.base.display()
        );
        cluster.server_program(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
        cluster
    }

    fn server_program(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .output()
            .expect("run a PostgreSQL server program");
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The libpq environment that reaches this cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.base.to_string_lossy().into_owned()),
            ("PGPORT".into(), "5432".into()),
            ("PGUSER".into(), "postgres".into()),
        ]
    }

    /// A client program (psql, pgbench ...) against this cluster; panics on failure.
    pub fn client(&self, program: &str, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let path = if program == "pgbench" {
            self.bin.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut child = Command::new(path)
            .args(args)
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a PostgreSQL client");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL (from stdin) in `db` and returns the unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.client(
            "psql",
            &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db],
            sql,
        )
    }

    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\";"));
    }

    /// `pgbench -i -s scale` into a new database.
    pub fn pgbench_init(&self, db: &str, scale: u32) {
        self.create_db(db);
        self.client("pgbench", &["-i", "-q", "-s", &scale.to_string(), db], "");
    }

    /// `transactions` pgbench TPC-B transactions (scattered updates of accounts, tellers and
    /// branches, inserts into history).
    pub fn pgbench_run(&self, db: &str, transactions: u32) {
        self.client("pgbench", &["-n", "-t", &transactions.to_string(), db], "");
    }

    /// Per table: row count and an md5 over its rows in order, for "equal state" checks.
    pub fn fingerprint(&self, db: &str) -> std::collections::BTreeMap<String, String> {
        let tables = self.psql(
            db,
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1;",
        );
        tables
            .lines()
            .filter(|t| !t.is_empty())
            .map(|t| {
                let v = self.psql(
                    db,
                    &format!(
                        "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x;"
                    ),
                );
                (t.to_string(), v.trim().to_string())
            })
            .collect()
    }

    pub fn database_exists(&self, db: &str) -> bool {
        self.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}';"),
        )
        .trim()
            == "1"
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.base.join("data");
        let path = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = cmd
            .args(["-D"])
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Every regular file below `root`, as relative path -> content.
pub fn tree_contents(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn visit(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                visit(root, &p, out);
            } else if t.is_file() {
                let rel = p.strip_prefix(root).expect("below root").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if root.is_file() {
        out.insert(PathBuf::new(), std::fs::read(root).expect("read"));
    } else {
        visit(root, root, &mut out);
    }
    out
}

/// A real S3 server for the tests: moto in server mode (see /work/shared/TESTING.md).
///
/// The Python virtual environment is created on first use at [`MOTO_VENV`] (`python3 -m venv`
/// and `pip install 'moto[server]'`, about a minute), so a fresh machine with python3 and
/// access to PyPI needs no other setup. Each server listens on a free port of 127.0.0.1 and
/// is killed when dropped, or, for the shared one, by a watchdog when the test process exits.
pub struct MotoServer {
    pub endpoint: String,
    port: u16,
    child: Child,
}

/// Where the moto virtual environment lives (shared by every test binary and target dir).
pub const MOTO_VENV: &str = "/tmp/coffer-moto-venv";

/// The access key and secret every S3 test uses; moto accepts any. The secret is a marker:
/// tests assert it never appears in coffer's output.
pub const S3_ACCESS_KEY: &str = "AKIACOFFERTEST";
pub const S3_SECRET_KEY: &str = "coffer-test-secret-9f8e7d6c5b4a";

fn moto_bin() -> PathBuf {
    let venv = Path::new(MOTO_VENV);
    let bin = venv.join("bin/moto_server");
    // Written last: a venv without it is a half-finished install (venvs cannot be moved, so
    // the install happens in place).
    let ready = venv.join(".coffer-ready");
    if ready.exists() && bin.exists() {
        return bin;
    }
    let _ = std::fs::remove_dir_all(venv);
    let status = Command::new("python3")
        .args(["-m", "venv", MOTO_VENV])
        .status()
        .expect("python3 is needed for the S3 tests (moto)");
    assert!(status.success(), "python3 -m venv {MOTO_VENV} failed");
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "moto[server]"])
        .status()
        .expect("running pip");
    assert!(status.success(), "pip install 'moto[server]' failed");
    assert!(bin.exists(), "{} missing after install", bin.display());
    std::fs::write(&ready, b"").expect("marking the moto venv ready");
    bin
}

static MOTO_INSTALL: Mutex<()> = Mutex::new(());

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Sends one plain HTTP request and returns the status code.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

impl MotoServer {
    /// Starts a new server (installing moto first if needed) and waits until it answers.
    pub fn start() -> MotoServer {
        MotoServer::start_logging(None)
    }

    /// As [`MotoServer::start`], writing the server's request log (one line per request, as
    /// `"GET /bucket/key HTTP/1.1" 206`) to `log`: tests count requests with [`requests`].
    pub fn start_logging(log: Option<&Path>) -> MotoServer {
        let log = log.map_or_else(|| "/dev/null".to_string(), |p| p.display().to_string());
        let bin = {
            let _guard = MOTO_INSTALL.lock().unwrap_or_else(|p| p.into_inner());
            moto_bin()
        };
        let port = free_port();
        // The watchdog shell kills moto when this test process is gone, even if it is killed.
        let script = format!(
            "{} -H 127.0.0.1 -p {port} >>'{log}' 2>&1 & m=$!; \
             trap 'kill $m 2>/dev/null; exit 0' TERM; \
             while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null",
            bin.display(),
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let server = MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while http(port, "GET", "/").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not come up on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    /// The server shared by every test of this binary.
    pub fn shared() -> &'static MotoServer {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(MotoServer::start)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh bucket with a unique name and returns the name.
    pub fn bucket(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "coffer-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let status = http(self.port, "PUT", &format!("/{name}"));
        assert_eq!(status, Some(200), "creating bucket {name}");
        name
    }

    /// The environment coffer needs to reach this server (what an operator would export).
    pub fn env_for(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // SIGTERM to the watchdog shell: its trap kills moto, then it exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The requests in a moto request log ([`MotoServer::start_logging`]) from byte `from` on, as
/// (method, path) pairs, in order.
pub fn requests(log: &Path, from: u64) -> Vec<(String, String)> {
    let text = std::fs::read(log).expect("reading the moto request log");
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
    text.lines()
        .filter_map(|line| {
            // `127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 -`, possibly in terminal colours.
            let request = line.split('"').nth(1)?;
            let mut parts = request.split_whitespace();
            let method = parts.next()?.trim_start_matches(|c: char| {
                c == '\u{1b}' || c == '[' || c.is_ascii_digit() || c == 'm'
            });
            let path = parts.next()?;
            matches!(method, "GET" | "PUT" | "POST" | "HEAD" | "DELETE")
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect()
}

/// A TCP proxy in front of a server that can be switched off: then it resets every open
/// connection and closes new ones at once, as a crashed server would. It can also switch
/// itself off after forwarding a number of request bytes, to fail in the middle of a run.
pub struct FlakyProxy {
    pub port: u16,
    state: Arc<ProxyState>,
}

struct ProxyState {
    down: AtomicBool,
    /// Switch off once this many client bytes were forwarded (u64::MAX: never).
    down_after: AtomicU64,
    forwarded: AtomicU64,
    connections: Mutex<Vec<std::net::TcpStream>>,
}

impl FlakyProxy {
    /// A proxy to 127.0.0.1:`target_port`.
    pub fn start(target_port: u16) -> FlakyProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let state = Arc::new(ProxyState {
            down: AtomicBool::new(false),
            down_after: AtomicU64::new(u64::MAX),
            forwarded: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if st.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                {
                    let mut conns = st.connections.lock().unwrap_or_else(|p| p.into_inner());
                    conns.extend(client.try_clone().ok());
                    conns.extend(server.try_clone().ok());
                }
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let up = st.clone();
                std::thread::spawn(move || pump(client, server, Some(up)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        FlakyProxy { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches off after `bytes` more request bytes.
    pub fn fail_after(&self, bytes: u64) {
        let now = self.state.forwarded.load(Ordering::SeqCst);
        self.state.down_after.store(now + bytes, Ordering::SeqCst);
    }

    /// Whether the proxy is switched off.
    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// Switches off now: open connections are reset, new ones closed.
    pub fn down(&self) {
        self.state.go_down();
    }

    /// Switches back on.
    pub fn up(&self) {
        self.state.down_after.store(u64::MAX, Ordering::SeqCst);
        self.state.down.store(false, Ordering::SeqCst);
    }
}

impl ProxyState {
    fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for c in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    count: Option<Arc<ProxyState>>,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(state) = &count {
            if state.down.load(Ordering::SeqCst) {
                break;
            }
            let total = state.forwarded.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total >= state.down_after.load(Ordering::SeqCst) {
                state.go_down();
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Every pack file of the local repository at `repo`, sorted by path.
pub fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(repo.join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// Flips one bit in the middle of the largest pack of the local repository at `repo` (in a
/// small test repository, the pack holding file data); returns that pack's path.
pub fn flip_byte_in_biggest_pack(repo: &Path) -> PathBuf {
    let pack = pack_files(repo)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("no pack files");
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    // Packs are stored read-only.
    std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&pack, &bytes).unwrap();
    pack
}

/// The index files of the local repository at `repo`, oldest first.
pub fn index_files_oldest_first(repo: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo.join("index"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    files
}

/// A real SMTP server for the alert tests: Python's aiosmtpd, from a virtual environment made
/// on first use at [`SMTP_VENV`] (as the moto one: `python3 -m venv`, `pip install aiosmtpd`).
///
/// Each server listens on a free port of 127.0.0.1 with a certificate for `localhost` signed by
/// a throwaway CA (made with the `openssl` command), requires `AUTH` with [`SMTP_USER`] /
/// [`SMTP_PASSWORD`] for `starttls` and `tls`, and writes every message it accepts to a JSON
/// file (envelope, data, whether the session was encrypted and who logged in). It exits when
/// dropped or when the test process is gone.
pub struct SmtpServer {
    pub port: u16,
    /// The CA certificate (PEM) that signed the server's certificate: the `ca-file` to trust.
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

/// Where the aiosmtpd virtual environment lives (shared by every test binary).
pub const SMTP_VENV: &str = "/tmp/coffer-aiosmtpd-venv";
/// The login the test SMTP server accepts; the password is a marker that must never be printed.
pub const SMTP_USER: &str = "coffer-mailer";
pub const SMTP_PASSWORD: &str = "smtp-pass-7c1e9a05d3";

const SMTP_SERVER_PY: &str = r#"
import email, email.policy, json, logging, os, ssl, sys, time, warnings
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# A client that gives up on a handshake (the untrusted-certificate test) is expected here.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)
warnings.simplefilter("ignore")

port, mode, cert, key, outdir, user, password, parent = sys.argv[1:9]

class Handler:
    def __init__(self):
        self.count = 0
    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        record = {
            "subject": str(message["subject"]),
            "from": str(message["from"]),
            "to": str(message["to"]),
            "content_type": message.get_content_type(),
            "body": message.get_content(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "encrypted": session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
            "login": session.auth_data if session.authenticated else None,
        }
        path = os.path.join(outdir, "%04d.json" % self.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == user.encode() and auth_data.password == password.encode())
    return AuthResult(success=ok, auth_data=user if ok else None)

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
kwargs = dict(hostname="127.0.0.1", port=int(port), authenticator=authenticator)
if mode == "starttls":
    kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
elif mode == "tls":
    # aiosmtpd offers AUTH only after its own STARTTLS unless told the connection is fine:
    # here it is TLS from the first byte.
    kwargs.update(ssl_context=context, server_hostname="localhost", auth_require_tls=False)
else:
    kwargs.update(auth_required=False, auth_require_tls=False)
controller = Controller(Handler(), **kwargs)
controller.start()
print("ready", flush=True)
while os.getppid() == int(parent):
    time.sleep(0.5)
controller.stop()
"#;

fn aiosmtpd_python() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Path::new(SMTP_VENV);
    let python = venv.join("bin/python");
    let ready = venv.join(".coffer-ready");
    if ready.exists() && python.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(venv);
    let status = Command::new("python3")
        .args(["-m", "venv", SMTP_VENV])
        .status()
        .expect("python3 is needed for the SMTP tests (aiosmtpd)");
    assert!(status.success(), "python3 -m venv {SMTP_VENV} failed");
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "aiosmtpd"])
        .status()
        .expect("running pip");
    assert!(status.success(), "pip install aiosmtpd failed");
    std::fs::write(&ready, b"").expect("marking the aiosmtpd venv ready");
    python
}

/// Runs `openssl` with `args` in `dir`, failing the test with its stderr.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is needed for the SMTP TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SmtpServer {
    /// Starts a server speaking `mode`: `"starttls"`, `"tls"` (implicit TLS) or `"none"`.
    pub fn start(mode: &str) -> SmtpServer {
        let python = aiosmtpd_python();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // A CA, and a server certificate for localhost / 127.0.0.1 that it signs.
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=Coffer test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("writing ext.cnf");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ],
        );
        std::fs::write(d.join("server.py"), SMTP_SERVER_PY).expect("writing server.py");
        let out = d.join("messages");
        std::fs::create_dir(&out).expect("mkdir messages");
        let port = free_port();
        let mut child = Command::new(python)
            .arg(d.join("server.py"))
            .args([&port.to_string(), mode])
            .arg(d.join("server.pem"))
            .arg(d.join("server.key"))
            .arg(&out)
            .args([SMTP_USER, SMTP_PASSWORD, &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the aiosmtpd server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("server stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("reading the server's ready line");
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpServer {
            port,
            ca_file: d.join("ca.pem"),
            dir,
            child,
        }
    }

    /// Every message received so far, in order, as the server recorded it: the parsed
    /// headers (`subject`, `from`, `to`, `content_type`), the decoded `body`, the envelope
    /// (`mail_from`, `rcpt_tos`), `encrypted` and `login`.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("messages"))
            .expect("reading the messages")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
