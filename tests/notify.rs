//! Alerts against a real HTTP server started by the test (a `TcpListener` thread speaking
//! HTTP/1.1): healthchecks-style pings (start, success, fail) and webhook bodies for a
//! success and a failing source; a receiver that is down is a warning, never the exit code.

use coffer_e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// A tiny HTTP server on 127.0.0.1 that records every request and answers 200.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some(req) = read_request(&mut stream) {
                    log.lock().unwrap().push(req);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK",
                );
            }
        });
        Receiver { url, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    fn webhook_body(&self, path: &str) -> Value {
        let reqs = self.requests();
        let req = reqs
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no request to {path}: {reqs:?}"));
        assert_eq!(req.method, "POST");
        serde_json::from_str(&req.body).unwrap()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

const BODY_FIELDS: [&str; 14] = [
    "coffer_version",
    "command",
    "status",
    "exit_code",
    "hostname",
    "repository",
    "started",
    "finished",
    "duration_seconds",
    "snapshot_id",
    "sources",
    "summary",
    "warnings",
    "error",
];

#[test]
fn pings_and_webhook_on_success_and_on_failure() {
    let server = Receiver::start();
    let env = Env::new();
    env.init();
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/a.txt"), b"alpha").unwrap();
    let data = env.path("data").display().to_string();
    let hook = format!("{}/hook", server.url);
    let ping = format!("ping:{}/ping/abc-secret", server.url);

    // Success: start, success ping, webhook body; -q keeps the run silent.
    let run = env
        .run(&["-q", "--notify", &hook, "--notify", &ping, "backup", &data])
        .ok();
    assert_eq!(run.stdout, "", "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths[0], "/ping/abc-secret/start", "{paths:?}");
    assert!(paths.contains(&"/ping/abc-secret".to_string()), "{paths:?}");
    let body = server.webhook_body("/hook");
    for field in BODY_FIELDS {
        assert!(body.get(field).is_some(), "{field} missing: {body:#}");
    }
    assert_eq!(body["command"], "backup");
    assert_eq!(body["status"], "success");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["error"], Value::Null);
    let id = body["snapshot_id"].as_str().unwrap();
    assert_eq!(env.snapshots()[0]["id"], id);
    assert_eq!(body["summary"]["files"], 1);

    // Failure: the fail ping and a body with the error and the exit code.
    server.clear();
    let run = env.run(&[
        "--notify",
        &hook,
        "--notify",
        &ping,
        "backup",
        "/nonexistent/coffer-notify-test",
    ]);
    assert_ne!(run.code, 0);
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/ping/abc-secret/fail".to_string()),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&"/ping/abc-secret".to_string()),
        "{paths:?}"
    );
    let body = server.webhook_body("/hook");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["exit_code"], run.code);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("coffer-notify-test"),
        "{body:#}"
    );
}

#[test]
fn a_failing_source_from_the_config_reaches_the_webhook() {
    let server = Receiver::start();
    let env = Env::new();
    env.init();
    let config = env.path("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.db]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo dump failed >&2; exit 3\"]\n\n\
             [notify]\nwebhook = [\"{0}/hook\"]\nping = [\"{0}/ping/key\"]\n",
            server.url
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let run = env.run(&["--config", &config, "backup"]).expect_code(1);
    assert!(run.stderr.contains("db"), "{run:?}");
    let body = server.webhook_body("/hook");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["exit_code"], 1);
    assert!(body["error"].as_str().unwrap().contains("db"), "{body:#}");
    assert!(server.requests().iter().any(|r| r.path == "/ping/key/fail"));
    // An unknown key in [notify] is refused, naming it.
    std::fs::write(&config, "[notify]\nwebhok = [\"http://x\"]\n").unwrap();
    let bad = env.run(&["--config", &config, "backup"]).expect_code(2);
    assert!(bad.stderr.contains("webhok"), "{bad:?}");
}

#[test]
fn a_receiver_that_is_down_is_a_warning_without_the_secret() {
    // A port nothing listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new();
    env.init();
    let hook = format!("http://127.0.0.1:{port}/hooks/s3cr3t-token");
    let run = env
        .run_stdin(
            &["--notify", &hook, "backup", "--stdin-name", "x.txt"],
            b"x",
        )
        .ok();
    assert!(
        run.stderr.contains("warning: webhook notification"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("s3cr3t-token"), "{run:?}");
    assert!(!run.stdout.contains("s3cr3t-token"), "{run:?}");
    // --notify on a command that sends none is a usage error.
    env.run(&["--notify", &hook, "snapshots"]).expect_code(2);
}

#[test]
fn a_dump_that_shrinks_by_90_percent_warns_alerts_and_fails_on_request() {
    let server = Receiver::start();
    let env = Env::new();
    env.init();
    let dump = env.path("app.dump");
    let config = env.path("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.db]\nkind = \"command\"\ncommand = [\"cat\", \"{}\"]\n\n\
             [notify]\nwebhook = [\"{}/hook\"]\n",
            dump.display(),
            server.url
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    for seed in 0..3 {
        std::fs::write(&dump, pseudo_random(seed, 1_000_000)).unwrap();
        let run = env.run(&["--config", &config, "-q", "backup"]).ok();
        assert_eq!(run.stderr, "", "a steady size is no anomaly: {run:?}");
    }
    // 90% smaller: a warning (even with -q), in the JSON and in the webhook body; exit 0.
    std::fs::write(&dump, pseudo_random(9, 100_000)).unwrap();
    server.clear();
    let run = env
        .run(&["--config", &config, "-q", "backup", "--json"])
        .ok();
    assert!(run.stderr.contains("anomaly: source db"), "{run:?}");
    assert!(run.stderr.contains("90% smaller"), "{run:?}");
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["anomalies"].as_array().unwrap().len(), 1, "{json:#}");
    let body = server.webhook_body("/hook");
    assert_eq!(body["status"], "success");
    assert!(
        body["anomalies"][0]
            .as_str()
            .unwrap()
            .contains("90% smaller"),
        "{body:#}"
    );
    // --fail-on anomaly: exit 1, and the snapshot is saved all the same.
    let run = env
        .run(&["--config", &config, "backup", "--fail-on", "anomaly"])
        .expect_code(1);
    assert!(run.stderr.contains("was saved"), "{run:?}");
    assert_eq!(env.snapshots().len(), 5);
    // Back to the usual size: quiet again.
    std::fs::write(&dump, pseudo_random(10, 1_000_000)).unwrap();
    let run = env
        .run(&["--config", &config, "-q", "backup", "--fail-on", "anomaly"])
        .ok();
    assert_eq!(run.stderr, "", "{run:?}");
}
