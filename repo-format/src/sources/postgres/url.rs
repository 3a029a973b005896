//! `postgres://` connection URLs, parsed into libpq environment variables so that no part of
//! one (the password least of all) ever reaches a child's argv; shown only redacted.

use crate::error::{Error, Result};
use zeroize::Zeroizing;

/// A `postgres://` connection URL, kept as libpq environment variables.
pub struct PgUrl {
    /// libpq's variables for the URL's parts, set on every child (never argv).
    pub(super) env: Vec<(&'static str, Zeroizing<String>)>,
    database: Option<String>,
    redacted: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

fn percent_decode(s: &str, what: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::InvalidInput(format!("bad percent-escape in the {what} of the URL"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::InvalidInput(format!("the {what} of the URL is not UTF-8")))
}

/// URL query parameters and the libpq environment variables they become.
const URL_PARAMETERS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("dbname", "PGDATABASE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
];

impl PgUrl {
    /// Parses `postgres://[user[:password]@][host][:port][/database][?param=value&...]`
    /// (also `postgresql://`). The error never contains the password.
    pub fn parse(url: &str) -> Result<PgUrl> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                Error::InvalidInput(
                    "a PostgreSQL url must start with postgres:// or postgresql://".into(),
                )
            })?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut env: Vec<(&'static str, Zeroizing<String>)> = Vec::new();
        let mut redacted = String::from("postgres://");
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                env.push(("PGUSER", Zeroizing::new(percent_decode(user, "user")?)));
                redacted.push_str(user);
            }
            if let Some(p) = password {
                env.push(("PGPASSWORD", Zeroizing::new(percent_decode(p, "password")?)));
                redacted.push_str(":<redacted>");
            }
            redacted.push('@');
        }
        if !hostport.is_empty() {
            // `[::1]:5432`, `host:5432`, `host`.
            let (host, port) = if let Some(end) = hostport.strip_prefix('[') {
                let (h, after) = end.split_once(']').ok_or_else(|| {
                    Error::InvalidInput("unclosed [ in the host of the PostgreSQL url".into())
                })?;
                (h, after.strip_prefix(':'))
            } else {
                match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (hostport, None),
                }
            };
            if !host.is_empty() {
                env.push(("PGHOST", Zeroizing::new(percent_decode(host, "host")?)));
            }
            if let Some(port) = port {
                if port.parse::<u16>().is_err() {
                    return Err(Error::InvalidInput(format!(
                        "the port {port:?} of the PostgreSQL url is not a number"
                    )));
                }
                env.push(("PGPORT", Zeroizing::new(port.to_string())));
            }
            redacted.push_str(hostport);
        }
        let database = if path.is_empty() {
            None
        } else {
            Some(percent_decode(path, "database")?)
        };
        if let Some(db) = &database {
            redacted.push('/');
            redacted.push_str(db);
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let var = URL_PARAMETERS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the PostgreSQL url parameter {key:?} is not supported; supported: {}",
                        URL_PARAMETERS
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            env.retain(|(v, _)| *v != var);
            env.push((var, Zeroizing::new(percent_decode(value, key)?)));
        }
        Ok(PgUrl {
            env,
            database,
            redacted,
        })
    }

    /// The database named in the URL's path.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_become_environment_and_the_password_is_redacted() {
        let url =
            PgUrl::parse("postgres://app:s%40cret@db.internal:6432/weave?sslmode=require").unwrap();
        assert_eq!(url.database(), Some("weave"));
        let env: Vec<(&str, &str)> = url.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert!(env.contains(&("PGPASSWORD", "s@cret")));
        assert!(env.contains(&("PGHOST", "db.internal")));
        assert!(env.contains(&("PGPORT", "6432")));
        assert!(env.contains(&("PGSSLMODE", "require")));
        let shown = format!("{url:?} {url}");
        assert!(!shown.contains("cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_password() {
        for bad in [
            "mysql://x",
            "postgres://u:hunter2@h:port/db",
            "postgres://u:hunter2@h/db?foo=1",
        ] {
            let e = PgUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
