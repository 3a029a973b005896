//! Alerts: after a scheduled command (backup, forget, prune, check, drill, copy) Coffer tells
//! webhooks (an HTTP POST of a documented JSON body), healthchecks-style ping URLs
//! (`URL/start` before, `URL` on success, `URL/fail` on failure) and a mail server
//! (`[notify.smtp]`, `crate::mail`) how it went.
//!
//! Targets come from `[notify]` in the configuration and from `--notify URL` (repeatable; a
//! plain URL is a webhook, `ping:URL` a ping URL). A notification that fails is a warning on
//! stderr: the command's own exit code never changes, and its result is never hidden. A
//! target's URL is never printed whole (its path or query is often the secret): messages name
//! its scheme and host only.

use std::time::Duration;

pub use crate::config::NotifyConfig;

/// Where notifications go for one run.
#[derive(Default, Clone)]
pub struct Targets {
    webhooks: Vec<String>,
    pings: Vec<String>,
    mail: Option<crate::mail::Mailer>,
    failures_only: bool,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field(
                "webhooks",
                &self.webhooks.iter().map(|u| shown(u)).collect::<Vec<_>>(),
            )
            .field(
                "pings",
                &self.pings.iter().map(|u| shown(u)).collect::<Vec<_>>(),
            )
            .field("mail", &self.mail)
            .finish()
    }
}

/// A URL as it may be printed: scheme and host, nothing that could be a secret.
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Checks one URL: http or https, parsable. The error never quotes the URL.
fn check_url(url: &str, what: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "{what} {}: only http:// and https:// URLs are supported",
            shown(u.as_str())
        )),
        Err(e) => Err(format!("{what}: not a URL ({e})")),
    }
}

impl Targets {
    /// The configuration's targets plus `--notify` ones (`ping:URL` or a webhook URL).
    /// `base` is the configuration file's directory (for `[notify.smtp]`'s relative paths).
    pub fn new(
        config: Option<&NotifyConfig>,
        flags: &[String],
        base: &std::path::Path,
    ) -> Result<Targets, String> {
        let mut t = Targets::default();
        if let Some(c) = config {
            t.webhooks.extend(c.webhook.iter().cloned());
            t.pings.extend(c.ping.iter().cloned());
            if let Some(smtp) = &c.smtp {
                t.mail = Some(crate::mail::Mailer::new(smtp, base)?);
            }
            t.failures_only = match c.on.as_deref() {
                None | Some("always") => false,
                Some("failure") => true,
                Some(other) => {
                    return Err(format!(
                        "[notify] on = {other:?}: use \"always\" or \"failure\""
                    ))
                }
            };
        }
        for flag in flags {
            match flag.strip_prefix("ping:") {
                Some(url) => t.pings.push(url.to_string()),
                None => t
                    .webhooks
                    .push(flag.strip_prefix("webhook:").unwrap_or(flag).into()),
            }
        }
        for u in &t.webhooks {
            check_url(u, "webhook")?;
        }
        for u in &t.pings {
            check_url(u, "ping URL")?;
        }
        Ok(t)
    }

    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.pings.is_empty() && self.mail.is_none()
    }

    /// `URL/start` for every ping URL, before the run.
    pub fn start(&self) {
        for url in &self.pings {
            send(&join(url, "start"), None, "ping");
        }
    }

    /// After the run: `URL` or `URL/fail` for pings, the body for webhooks, the message.
    pub fn finish(&self, body: &serde_json::Value, success: bool) {
        let text = body.to_string();
        for url in &self.pings {
            let target = if success {
                url.clone()
            } else {
                join(url, "fail")
            };
            send(&target, Some(&text), "ping");
        }
        if success && self.failures_only {
            return;
        }
        for url in &self.webhooks {
            send(url, Some(&text), "webhook");
        }
        if let Some(mail) = &self.mail {
            if let Err(why) = mail.send(body) {
                eprintln!(
                    "warning: email notification to {} failed: {} (the command's result is unchanged)",
                    crate::escape::message(&mail.shown()),
                    crate::escape::message(&why)
                );
            }
        }
    }
}

/// `https://hc-ping.com/UUID` + `start` = `https://hc-ping.com/UUID/start` (a query stays last).
fn join(url: &str, suffix: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let path = format!("{}/{suffix}", u.path().trim_end_matches('/'));
            u.set_path(&path);
            u.to_string()
        }
        Err(_) => format!("{}/{suffix}", url.trim_end_matches('/')),
    }
}

/// One POST (JSON body if given), 10 s at most; a failure is a warning naming scheme and host.
fn send(url: &str, body: Option<&str>, what: &str) {
    if let Err(why) = post(url, body) {
        eprintln!(
            "warning: {what} notification to {} failed: {} (the command's result is unchanged)",
            shown(url),
            crate::escape::message(&why)
        );
    }
}

fn post(url: &str, body: Option<&str>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.without_url().to_string())?;
        let mut request = client.post(url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the server answered {}", response.status()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_config_and_flags() {
        let here = std::path::Path::new(".");
        let config = NotifyConfig {
            webhook: vec!["https://hooks.example/abc".into()],
            ping: vec!["https://hc-ping.com/uuid".into()],
            on: Some("failure".into()),
            smtp: None,
        };
        let t = Targets::new(
            Some(&config),
            &[
                "ping:http://127.0.0.1:1/p".into(),
                "http://127.0.0.1:1/w".into(),
            ],
            here,
        )
        .unwrap();
        assert_eq!(t.webhooks.len(), 2);
        assert_eq!(t.pings.len(), 2);
        assert!(t.failures_only);
        let bad = Targets::new(None, &["ftp://secret@host/x".into()], here).unwrap_err();
        assert!(!bad.contains("secret"), "{bad}");
        assert!(Targets::new(None, &["not a url".into()], here).is_err());
        let on = NotifyConfig {
            on: Some("sometimes".into()),
            ..NotifyConfig::default()
        };
        assert!(Targets::new(Some(&on), &[], here).is_err());
    }

    #[test]
    fn urls_are_shown_without_secrets_and_joined_before_the_query() {
        assert_eq!(
            shown("https://user:pw@hc-ping.com/0123-secret?k=v"),
            "https://hc-ping.com/…"
        );
        assert_eq!(
            join("https://hc-ping.com/uuid/", "fail"),
            "https://hc-ping.com/uuid/fail"
        );
        assert_eq!(
            join("http://h/ping/key?create=1", "start"),
            "http://h/ping/key/start?create=1"
        );
        let t = Targets::new(
            None,
            &["https://h/secret-token".into()],
            std::path::Path::new("."),
        )
        .unwrap();
        assert!(!format!("{t:?}").contains("secret-token"));
    }
}
