//! Keeping credentials out of messages: the configured secret values of one storage handle, and
//! the user information of every URL in a text. Every error a backend builds from a store's
//! message passes through [`Secrets::scrub`]. Pure string work: uses nothing but `std`.

/// Option keys (object_store's, with or without their `aws_`/`google_` prefix) whose values
/// are secret. Their values, from options or the environment, are scrubbed from messages.
const SECRET_KEY_MARKERS: &[&str] = &[
    "secret",
    "token",
    "password",
    "service_account_key",
    "customer_key",
    "access_key_id",
];

/// The secret values one storage handle was configured with, longest first, so that a secret
/// containing another is replaced whole. Never shown: it has no `Debug`.
#[derive(Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets among `options` and the store's environment variables `env`: the values of
    /// secret keys, and the user names and passwords written into URLs (an `endpoint` option,
    /// `AWS_ENDPOINT`), which are credentials too wherever they turn up.
    pub(crate) fn from_config(options: &[(String, String)], env: &[(String, String)]) -> Secrets {
        let mut secrets: Vec<String> = options
            .iter()
            .chain(env)
            .filter(|(k, _)| is_secret_key(k))
            .map(|(_, v)| v.clone())
            .collect();
        for (_, value) in options.iter().chain(env) {
            secrets.extend(url_credentials(value));
        }
        // Short values would mangle every message; no real credential is that short.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(secrets)
    }

    /// `text` with every secret replaced by `<redacted>` and the user information of every
    /// URL in it by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = scrub_url_credentials(text);
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_MARKERS.iter().any(|m| key.contains(m))
}

/// Characters that end the authority part of a URL (`user:password@host:port`) in a message.
/// Sub-delimiters (`!$&'()*+,;=`) may appear unencoded in a password, so they do not end it.
fn ends_authority(c: char) -> bool {
    matches!(
        c,
        '/' | '?' | '#' | '"' | '<' | '>' | '`' | '\\' | '{' | '}' | '|' | '^'
    ) || c.is_whitespace()
        || c.is_control()
}

/// `text` with the user information of every URL in it (`scheme://USER:PASSWORD@host...`)
/// replaced by `***`: `http://***@127.0.0.1:9000/bucket`. Locations are shown this way, so a
/// password typed into one never reaches a message.
pub fn scrub_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(ends_authority).unwrap_or(after.len());
        let (authority, tail) = after.split_at(end);
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The user name and password written into the URLs in `value`, if any.
fn url_credentials(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("://") {
        let after = &rest[at + 3..];
        let end = after.find(ends_authority).unwrap_or(after.len());
        if let Some(user_end) = after[..end].rfind('@') {
            let userinfo = &after[..user_end];
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    found.push(user.to_string());
                    found.push(password.to_string());
                }
                None => found.push(userinfo.to_string()),
            }
        }
        rest = &after[end..];
    }
    found.retain(|s| !s.is_empty());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_scrubbed_from_messages() {
        let cases = [
            (
                "Error performing HEAD http://user:pa55word@127.0.0.1:9000/b/config in 1ms",
                "Error performing HEAD http://***@127.0.0.1:9000/b/config in 1ms",
            ),
            ("https://key@host", "https://***@host"),
            ("(http://u:p!$&'()*+,;=@h:1)", "(http://***@h:1)"),
            ("http://u:p@[::1]:9000?x=1", "http://***@[::1]:9000?x=1"),
            (
                "a http://u:p@h/ and s3://k:s@b/p",
                "a http://***@h/ and s3://***@b/p",
            ),
            ("\"http://u:p@h\"", "\"http://***@h\""),
            // No user information, or an @ after the authority: unchanged.
            ("http://127.0.0.1:9000/a@b", "http://127.0.0.1:9000/a@b"),
            ("mail me at a@b.c", "mail me at a@b.c"),
            ("/var/backups/app", "/var/backups/app"),
            ("file:///srv/x@y", "file:///srv/x@y"),
            ("ends with ://", "ends with ://"),
            ("", ""),
        ];
        for (text, want) in cases {
            assert_eq!(scrub_url_credentials(text), want, "{text}");
        }
        assert_eq!(
            url_credentials("http://user:pa55word@h http://only@h http://h"),
            ["user", "pa55word", "only"]
        );
    }

    #[test]
    fn secret_values_and_url_users_are_redacted_short_values_kept() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let secrets = Secrets::from_config(
            &[
                pair("aws_secret_access_key", "wJalrXUtnFEMI-very-secret"),
                pair("region", "eu-west-1"),
                pair("token", "abc"),
                pair("endpoint", "http://urluser:pa55@h:9"),
            ],
            &[pair("AWS_SESSION_TOKEN", "session-token-value")],
        );
        assert_eq!(
            secrets.scrub("wJalrXUtnFEMI-very-secret eu-west-1 abc session-token-value urluser"),
            "<redacted> eu-west-1 abc <redacted> <redacted>"
        );
    }
}
