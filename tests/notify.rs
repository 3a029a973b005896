//! Alerts against a real HTTP server started by the test (a `TcpListener` thread speaking
//! HTTP/1.1): healthchecks-style pings (start, success, fail) and webhook bodies for a
//! success and a failing source; a receiver that is down is a warning, never the exit code.
//! Email against a real SMTP server (aiosmtpd, `SmtpServer` in the harness) with STARTTLS,
//! implicit TLS and plain text on loopback.

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
    // Recorded in the snapshot's summary too: in `snapshots --json`, `cat snapshot` and the
    // details; the steady backups before it have none.
    let id = json["id"].as_str().unwrap().to_string();
    for snap in env.snapshots() {
        let recorded = &snap["summary"]["anomalies"];
        if snap["id"] == id.as_str() {
            assert!(
                recorded[0].as_str().unwrap().contains("90% smaller"),
                "{snap:#}"
            );
        } else {
            assert!(recorded.is_null(), "{snap:#}");
        }
    }
    let cat = env.run(&["cat", "snapshot", &id]).ok();
    let cat: Value = serde_json::from_str(&cat.stdout).unwrap();
    assert_eq!(
        cat["snapshot"]["summary"]["anomalies"], json["anomalies"],
        "{cat:#}"
    );
    let details = env.run(&["snapshots", &id, "--details"]).ok();
    assert!(
        details.stdout.contains("  anomaly   anomaly: source db"),
        "{details:?}"
    );
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

/// A `[notify.smtp]` table for `server`, with `extra` lines (tls, password source, ca-file).
fn smtp_config(env: &Env, server: &SmtpServer, extra: &str) -> String {
    let config = env.path("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "[notify.smtp]\nhost = \"localhost\"\nport = {}\nuser = \"{SMTP_USER}\"\n\
             from = \"Coffer <coffer@example.org>\"\n\
             to = [\"ops@example.org\", \"Second <dba@example.org>\"]\n{extra}",
            server.port
        ),
    )
    .unwrap();
    config.display().to_string()
}

fn assert_no_secret(run: &Run) {
    assert!(!run.stdout.contains(SMTP_PASSWORD), "{run:?}");
    assert!(!run.stderr.contains(SMTP_PASSWORD), "{run:?}");
}

#[test]
fn email_over_starttls_on_success_and_on_failure() {
    let server = SmtpServer::start("starttls");
    let env = Env::new();
    env.init();
    std::fs::write(env.path("smtp-password"), format!("{SMTP_PASSWORD}\n")).unwrap();
    let config = smtp_config(
        &env,
        &server,
        &format!(
            "tls = \"starttls\"\npassword-file = \"smtp-password\"\nca-file = \"{}\"\n",
            server.ca_file.display()
        ),
    );
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/a.txt"), b"alpha").unwrap();
    let data = env.path("data").display().to_string();
    let host = std::process::Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap();

    // Success, with -q: nothing printed, one message with the facts.
    let run = env.run(&["--config", &config, "-q", "backup", &data]).ok();
    assert_eq!(run.stdout, "", "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    assert_eq!(m["subject"], format!("coffer backup OK on {host}"), "{m:#}");
    assert_eq!(m["from"], "Coffer <coffer@example.org>");
    assert_eq!(m["to"], "ops@example.org, Second <dba@example.org>");
    assert_eq!(m["mail_from"], "coffer@example.org");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@example.org", "dba@example.org"])
    );
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["encrypted"], true, "STARTTLS was not used: {m:#}");
    assert_eq!(m["login"], SMTP_USER);
    let id = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    let body = m["body"].as_str().unwrap();
    for part in [
        format!("coffer backup on {host}: success (exit code 0)"),
        format!("snapshot    {id}"),
        "files: 1".into(),
        "duration".into(),
    ] {
        assert!(body.contains(&part), "{part:?} missing in\n{body}");
    }

    // Failure: FAILED, the exit code and the error in the body; the run's exit code stays.
    let run = env.run(&[
        "--config",
        &config,
        "backup",
        "/nonexistent/coffer-smtp-test",
    ]);
    assert_ne!(run.code, 0);
    assert!(!run.stderr.contains("email notification"), "{run:?}");
    assert_no_secret(&run);
    let messages = server.messages();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let m = &messages[1];
    assert_eq!(m["subject"], format!("coffer backup FAILED on {host}"));
    let body = m["body"].as_str().unwrap();
    assert!(
        body.contains(&format!("failure (exit code {})", run.code)),
        "{body}"
    );
    assert!(body.contains("error:"), "{body}");
    assert!(body.contains("coffer-smtp-test"), "{body}");
}

#[test]
fn email_over_implicit_tls_with_the_password_from_the_environment() {
    let server = SmtpServer::start("tls");
    let mut env = Env::new();
    env.init();
    env.extra_env
        .push(("COFFER_TEST_SMTP_PW".into(), SMTP_PASSWORD.into()));
    let config = smtp_config(
        &env,
        &server,
        &format!(
            "tls = \"tls\"\npassword-env = \"COFFER_TEST_SMTP_PW\"\nca-file = \"{}\"\n\n\
             [notify]\non = \"failure\"\n",
            server.ca_file.display()
        ),
    );
    // on = "failure": a success sends nothing, a failure sends the message.
    env.run_stdin(
        &["--config", &config, "-q", "backup", "--stdin-name", "x"],
        b"x",
    )
    .ok();
    assert_eq!(server.messages().len(), 0);
    let run = env.run(&["--config", &config, "check", "--read-data"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.messages().len(), 0);
    let run = env.run(&["--config", &config, "backup", "/nonexistent/x"]);
    assert_ne!(run.code, 0);
    assert_no_secret(&run);
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?} {run:?}");
    assert_eq!(messages[0]["encrypted"], true);
    assert_eq!(messages[0]["login"], SMTP_USER);
    assert!(messages[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("coffer backup FAILED on "));
}

#[test]
fn an_untrusted_certificate_or_a_bad_password_is_a_warning_without_the_secret() {
    let server = SmtpServer::start("starttls");
    let mut env = Env::new();
    env.init();
    env.extra_env
        .push(("COFFER_TEST_SMTP_PW".into(), SMTP_PASSWORD.into()));
    // No ca-file: the system's roots do not know the test CA.
    let config = smtp_config(&env, &server, "password-env = \"COFFER_TEST_SMTP_PW\"\n");
    let run = env
        .run_stdin(&["--config", &config, "backup", "--stdin-name", "x"], b"x")
        .ok();
    assert!(
        run.stderr.contains(&format!(
            "warning: email notification to smtp://localhost:{} failed",
            server.port
        )),
        "{run:?}"
    );
    assert!(run.stderr.contains("certificate"), "{run:?}");
    assert_no_secret(&run);
    // The right CA and a wrong password: the server's refusal, exit code unchanged.
    env.extra_env.clear();
    env.extra_env
        .push(("COFFER_TEST_SMTP_PW".into(), "wrong-password-1234".into()));
    let config = smtp_config(
        &env,
        &server,
        &format!(
            "password-env = \"COFFER_TEST_SMTP_PW\"\nca-file = \"{}\"\n",
            server.ca_file.display()
        ),
    );
    let run = env
        .run_stdin(&["--config", &config, "backup", "--stdin-name", "x"], b"x")
        .ok();
    assert!(
        run.stderr.contains("warning: email notification"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("wrong-password-1234"), "{run:?}");
    assert_eq!(server.messages().len(), 0);
}

#[test]
fn plain_smtp_on_loopback_and_the_refusals() {
    let server = SmtpServer::start("none");
    let env = Env::new();
    env.init();
    let config = env.path("coffer.toml");
    let write = |text: String| std::fs::write(&config, text).unwrap();
    write(format!(
        "[notify.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"coffer@example.org\"\nto = [\"ops@example.org\"]\n",
        server.port
    ));
    let config_arg = config.display().to_string();
    env.run_stdin(
        &["--config", &config_arg, "backup", "--stdin-name", "x"],
        b"x",
    )
    .ok();
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0]["encrypted"], false);
    // tls = "starttls" (the default) against this server, which offers no STARTTLS: a warning,
    // never a fallback to plain text.
    write(format!(
        "[notify.smtp]\nhost = \"localhost\"\nport = {}\n\
         from = \"coffer@example.org\"\nto = [\"ops@example.org\"]\n",
        server.port
    ));
    let run = env
        .run_stdin(
            &["--config", &config_arg, "backup", "--stdin-name", "x"],
            b"x",
        )
        .ok();
    assert!(
        run.stderr.contains("warning: email notification"),
        "{run:?}"
    );
    assert_eq!(server.messages().len(), 1, "sent without STARTTLS");

    // tls = "none" to a host that is not loopback, a password in the file, a user without a
    // password, an unset password variable, a bad address: exit 2, the key named, no secret.
    let refused = [
        (
            "host = \"smtp.example.org\"\ntls = \"none\"\n".to_string(),
            "loopback",
        ),
        (
            "host = \"localhost\"\nuser = \"u\"\npassword = \"hunter2-in-file\"\n".into(),
            "never written",
        ),
        ("host = \"localhost\"\nuser = \"u\"\n".into(), "no password"),
        (
            "host = \"localhost\"\nuser = \"u\"\npassword-env = \"COFFER_UNSET_SMTP_PW\"\n".into(),
            "COFFER_UNSET_SMTP_PW",
        ),
        (
            "host = \"localhost\"\ntls = \"ssl\"\n".into(),
            "tls = \"ssl\"",
        ),
    ];
    for (lines, expected) in refused {
        write(format!(
            "[notify.smtp]\n{lines}from = \"coffer@example.org\"\nto = [\"ops@example.org\"]\n"
        ));
        let run = env
            .run_stdin(
                &["--config", &config_arg, "backup", "--stdin-name", "x"],
                b"x",
            )
            .expect_code(2);
        assert!(run.stderr.contains(expected), "{expected}: {run:?}");
        assert!(!run.stderr.contains("hunter2"), "{run:?}");
    }
    write(
        "[notify.smtp]\nhost = \"localhost\"\nfrom = \"not an address\"\nto = [\"ops@example.org\"]\n"
            .into(),
    );
    let run = env
        .run_stdin(
            &["--config", &config_arg, "backup", "--stdin-name", "x"],
            b"x",
        )
        .expect_code(2);
    assert!(run.stderr.contains("from"), "{run:?}");
    // Nothing was saved by the refused runs.
    assert_eq!(env.snapshots().len(), 2);
}
