//! Email over SMTP (`[notify.smtp]`): after a scheduled command, a plain-text message with the
//! same facts as the webhook body (`crate::notify_body`), subject `coffer backup OK on HOST`
//! (or `WARNING`, `FAILED`).
//!
//! Sent with `lettre` over rustls (the TLS stack the storage clients already use): `starttls`
//! (default, port 587: STARTTLS is required, a server that does not offer it is an error),
//! `tls` (implicit TLS, port 465) or `none` (plain text, refused for any host but a loopback
//! one). The server certificate is checked against the system's roots, or against `ca-file`
//! alone when it is given. The password comes from `password-file` or `password-env`, never
//! from the configuration itself or the command line; it is read once when the run starts and
//! never printed (`Debug` redacts it).

use crate::config::SmtpConfig;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    StartTls,
    Tls,
    None,
}

impl TlsMode {
    fn parse(s: Option<&str>) -> Result<TlsMode, String> {
        match s {
            None | Some("starttls") => Ok(TlsMode::StartTls),
            Some("tls") => Ok(TlsMode::Tls),
            Some("none") => Ok(TlsMode::None),
            Some(other) => Err(format!(
                "[notify.smtp] tls = {other:?}: use \"starttls\", \"tls\" or \"none\""
            )),
        }
    }

    fn default_port(self) -> u16 {
        match self {
            TlsMode::StartTls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }
}

/// A mail server ready to send to, with everything read and checked.
#[derive(Clone)]
pub struct Mailer {
    host: String,
    port: u16,
    tls: TlsMode,
    user: Option<String>,
    password: Option<Zeroizing<String>>,
    /// PEM text of `ca-file`.
    ca: Option<Vec<u8>>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("to", &self.to.len())
            .finish()
    }
}

/// The configuration's checks, the tls mode, and the addresses parsed.
pub fn validate(c: &SmtpConfig) -> Result<TlsMode, String> {
    c.validate()?;
    let tls = TlsMode::parse(c.tls.as_deref())?;
    c.from
        .parse::<Mailbox>()
        .map_err(|e| format!("[notify.smtp] from {:?}: not an address ({e})", c.from))?;
    for to in &c.to {
        to.parse::<Mailbox>()
            .map_err(|e| format!("[notify.smtp] to {to:?}: not an address ({e})"))?;
    }
    Ok(tls)
}

/// What a PEM certificate starts with (a key alone in `ca-file` is no certificate).
const CERT_MARK: &[u8] = b"-----BEGIN CERTIFICATE-----";

impl Mailer {
    /// Checks `c` and reads the password and CA file (`base` is the configuration file's
    /// directory, for relative paths). Errors name the key and never hold the password.
    pub fn new(c: &SmtpConfig, base: &Path) -> Result<Mailer, String> {
        let tls = validate(c)?;
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let password = match (&c.password_file, &c.password_env) {
            (Some(file), _) => {
                let path = resolve(file);
                let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "[notify.smtp] password-file {}: cannot read it ({e})",
                        path.display()
                    )
                })?);
                let line = text.lines().next().unwrap_or_default();
                if line.is_empty() {
                    return Err(format!(
                        "[notify.smtp] password-file {}: its first line is empty",
                        path.display()
                    ));
                }
                Some(Zeroizing::new(line.to_string()))
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(Zeroizing::new(v)),
                _ => {
                    return Err(format!(
                        "[notify.smtp] password-env: the environment variable {var} is not set"
                    ))
                }
            },
            (None, None) => None,
        };
        let ca = match &c.ca_file {
            Some(file) => {
                let path = resolve(file);
                let pem = std::fs::read(&path).map_err(|e| {
                    format!(
                        "[notify.smtp] ca-file {}: cannot read it ({e})",
                        path.display()
                    )
                })?;
                match Certificate::from_pem(&pem) {
                    Ok(_) if pem.windows(CERT_MARK.len()).any(|w| w == CERT_MARK) => Some(pem),
                    _ => {
                        return Err(format!(
                            "[notify.smtp] ca-file {}: no PEM certificate in it",
                            path.display()
                        ))
                    }
                }
            }
            None => None,
        };
        Ok(Mailer {
            host: c.host.clone(),
            port: c.port.unwrap_or(tls.default_port()),
            tls,
            user: c.user.clone(),
            password,
            ca,
            // Both parsed by `validate`.
            from: c
                .from
                .parse()
                .map_err(|e| format!("[notify.smtp] from: {e}"))?,
            to: c
                .to
                .iter()
                .map(|t| t.parse().map_err(|e| format!("[notify.smtp] to: {e}")))
                .collect::<Result<_, String>>()?,
        })
    }

    /// Where messages go, as it may be printed: `smtp://host:port`.
    pub fn shown(&self) -> String {
        format!("smtp://{}:{}", self.host, self.port)
    }

    /// Sends the message for the run described by `body` (the webhook body), 10 s per step.
    pub fn send(&self, body: &Value) -> Result<(), String> {
        let mut message = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject(body))
            .header(ContentType::TEXT_PLAIN)
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")).to_string());
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.body(text(body)).map_err(|e| e.to_string())?;
        let mut builder = SmtpTransport::builder_dangerous(self.host.as_str())
            .port(self.port)
            .timeout(Some(Duration::from_secs(10)));
        if self.tls != TlsMode::None {
            let mut params = TlsParameters::builder(self.host.clone());
            if let Some(pem) = &self.ca {
                let cert = Certificate::from_pem(pem).map_err(|e| e.to_string())?;
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(cert);
            }
            let params = params.build().map_err(|e| e.to_string())?;
            builder = builder.tls(match self.tls {
                TlsMode::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.as_str().to_string(),
            ));
        }
        builder
            .build()
            .send(&message)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }
}

/// lettre's error with its causes (`connection error: …: invalid peer certificate: …`).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        // lettre's own text often includes its cause already.
        if !text.contains(&more) {
            let _ = write!(text, ": {more}");
        }
        source = s.source();
    }
    text
}

fn str_of<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One line of header text: control characters (a newline in a hostname) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `coffer backup OK on web1`, `… WARNING …` (exit 3), `… FAILED …`.
pub fn subject(body: &Value) -> String {
    let outcome = match str_of(body, "status") {
        "success" => "OK",
        "warning" => "WARNING",
        _ => "FAILED",
    };
    one_line(&format!(
        "coffer {} {outcome} on {}",
        str_of(body, "command"),
        str_of(body, "hostname")
    ))
}

fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The webhook body's facts as readable text: one `key: value` line each, then the sources,
/// the summary, the warnings and the error.
pub fn text(body: &Value) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "coffer {} on {}: {} (exit code {})",
        str_of(body, "command"),
        str_of(body, "hostname"),
        str_of(body, "status"),
        number(body.get("exit_code").unwrap_or(&Value::Null))
    );
    t.push('\n');
    for (label, key) in [
        ("repository", "repository"),
        ("started", "started"),
        ("finished", "finished"),
        ("snapshot", "snapshot_id"),
        ("version", "coffer_version"),
    ] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            let _ = writeln!(t, "{label:<11} {}", number(v));
        }
    }
    if let Some(d) = body.get("duration_seconds").and_then(Value::as_f64) {
        let _ = writeln!(t, "{:<11} {d:.1} s", "duration");
    }
    if let Some(e) = body.get("error").and_then(Value::as_str) {
        let _ = writeln!(t, "\nerror:\n  {}", e.replace('\n', "\n  "));
    }
    if let Some(sources) = body.get("sources").and_then(Value::as_array) {
        if !sources.is_empty() {
            t.push_str("\nsources:\n");
        }
        for s in sources {
            let _ = write!(
                t,
                "  {} ({}) {}",
                str_of(s, "name"),
                str_of(s, "kind"),
                str_of(s, "tree_path")
            );
            if let Some(bytes) = s.pointer("/stream/bytes").and_then(Value::as_u64) {
                let _ = write!(t, ": {}", crate::output::bytes(bytes));
            }
            if let Some(tables) = s.pointer("/postgres/tables").and_then(Value::as_array) {
                let rows: u64 = tables
                    .iter()
                    .filter_map(|t| t.get("rows").and_then(Value::as_u64))
                    .sum();
                let _ = write!(t, ", {} tables, {rows} rows", tables.len());
            }
            t.push('\n');
        }
    }
    if let Some(summary) = body.get("summary").and_then(Value::as_object) {
        t.push_str("\nsummary:\n");
        for (k, v) in summary {
            if v.is_object() || v.is_array() {
                continue;
            }
            let _ = writeln!(t, "  {k}: {}", number(v));
        }
    }
    for key in ["anomalies", "warnings"] {
        let Some(list) = body.get(key).and_then(Value::as_array) else {
            continue;
        };
        if !list.is_empty() {
            let _ = writeln!(t, "\n{key}:");
        }
        for w in list {
            let w = w.as_str().map_or_else(|| w.to_string(), str::to_string);
            let _ = writeln!(t, "  - {}", w.replace('\n', "\n    "));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> SmtpConfig {
        SmtpConfig {
            host: "smtp.example.com".into(),
            user: Some("backup".into()),
            password_env: Some("COFFER_TEST_SMTP_PASSWORD_UNSET".into()),
            from: "Coffer <coffer@example.com>".into(),
            to: vec!["ops@example.com".into()],
            ..SmtpConfig::default()
        }
    }

    #[test]
    fn refusals_name_the_key() {
        assert_eq!(validate(&config()), Ok(TlsMode::StartTls));
        let mut c = config();
        c.tls = Some("none".into());
        assert!(validate(&c).unwrap_err().contains("loopback"));
        c.host = "127.0.0.1".into();
        assert_eq!(validate(&c), Ok(TlsMode::None));
        c.host = "[::1]".into();
        assert_eq!(validate(&c), Ok(TlsMode::None));
        let mut c = config();
        c.tls = Some("ssl".into());
        assert!(validate(&c).unwrap_err().contains("tls = \"ssl\""));
        let mut c = config();
        c.password_env = None;
        assert!(validate(&c).unwrap_err().contains("no password"));
        let mut c = config();
        c.password_file = Some("pw".into());
        assert!(validate(&c).unwrap_err().contains("keep one"));
        let mut c = config();
        c.to.clear();
        assert!(validate(&c).unwrap_err().contains("to is empty"));
        let mut c = config();
        c.from = "not an address".into();
        assert!(validate(&c).unwrap_err().contains("from"));
        let mut c = config();
        c.password = Some(serde::de::IgnoredAny);
        assert!(validate(&c).unwrap_err().contains("never written"));
        // An unset variable is named, and the run is refused before it starts.
        let e = Mailer::new(&config(), Path::new("/")).unwrap_err();
        assert!(e.contains("COFFER_TEST_SMTP_PASSWORD_UNSET"), "{e}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::write(dir.path().join("pw"), "x\n").unwrap();
        let mut c = config();
        c.password_env = None;
        c.password_file = Some("pw".into());
        c.ca_file = Some("ca.pem".into());
        let e = Mailer::new(&c, dir.path()).unwrap_err();
        assert!(
            e.contains("ca-file") && e.contains("no PEM certificate"),
            "{e}"
        );
        c.ca_file = Some("missing.pem".into());
        assert!(Mailer::new(&c, dir.path())
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn password_from_a_file_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cr3t-smtp\nignored\n").unwrap();
        let mut c = config();
        c.password_env = None;
        c.password_file = Some("pw".into());
        let m = Mailer::new(&c, dir.path()).unwrap();
        assert_eq!(
            m.password.as_deref().map(String::as_str),
            Some("s3cr3t-smtp")
        );
        assert_eq!(m.port, 587);
        assert!(!format!("{m:?}").contains("s3cr3t"));
        assert_eq!(m.shown(), "smtp://smtp.example.com:587");
    }

    #[test]
    fn subject_and_text_carry_the_facts() {
        let body = json!({
            "command": "backup", "status": "failure", "exit_code": 1, "hostname": "web1\nX",
            "repository": "s3://b/app", "snapshot_id": null, "duration_seconds": 2.31,
            "sources": [{"name": "db", "kind": "postgres", "tree_path": "/db/app.dump",
                         "stream": {"bytes": 2048},
                         "postgres": {"tables": [{"rows": 3}, {"rows": 4}]}}],
            "summary": {"files": 2, "total_bytes": 10},
            "warnings": ["a.txt unreadable"], "anomalies": ["db shrank"],
            "error": "pg_dump failed",
        });
        assert_eq!(subject(&body), "coffer backup FAILED on web1 X");
        let t = text(&body);
        for part in [
            "failure",
            "exit code 1",
            "s3://b/app",
            "2.3 s",
            "db (postgres) /db/app.dump: 2.0 KiB, 2 tables, 7 rows",
            "files: 2",
            "- db shrank",
            "- a.txt unreadable",
            "pg_dump failed",
        ] {
            assert!(t.contains(part), "{part:?} missing in\n{t}");
        }
        let ok = json!({"command": "check", "status": "success", "hostname": "h"});
        assert_eq!(subject(&ok), "coffer check OK on h");
    }
}
