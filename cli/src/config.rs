//! The configuration file (TOML): repository, password source, named sources, retention,
//! default tags and labels. Documented in docs/config.md.
//!
//! Which file: `--config PATH`, else `COFFER_CONFIG`, else `./coffer.toml` if it exists. A file
//! named explicitly must exist. Precedence, everywhere: flags > environment > config file >
//! defaults ([`apply_to_global`] is the one place that applies it to the global options).
//! Unknown keys are errors naming the key and the file. Relative paths in the file are relative
//! to the file's directory.

use anyhow::{bail, Context, Result};
use coffer_repo::ops::backup::{Source, SourceInput, StreamSource};
use coffer_repo::sources::postgres::{Consistency, DumpFormat, PgSource, PgUrl};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default file looked for in the working directory.
pub const DEFAULT_FILE: &str = "coffer.toml";

/// A string that must not be printed (a database URL with its password).
#[derive(Deserialize, Clone)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The file's contents.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Repository location (a local path or a URL).
    pub repository: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    /// Hostname recorded in snapshots (default: the machine's).
    pub hostname: Option<String>,
    /// Tags added to every backup.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Labels added to every backup (`--label` overrides a key).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Exclude patterns for every path source.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Named sources, backed up together into one snapshot.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    pub retention: Option<Retention>,
    /// Where alerts go (docs/operations.md).
    pub notify: Option<NotifyConfig>,
    /// Thresholds of the anomaly warnings after a backup (docs/operations.md).
    pub anomaly: Option<Thresholds>,
    /// Commands run before and after backups and restores (docs/config.md).
    pub hooks: Option<HooksConfig>,
    /// Where `coffer drill` restores database sources (docs/config.md).
    pub drill: Option<DrillConfig>,
}

// ---- [drill]: the drill's database server (issue 15, item 3) -----------------------------------

/// `[drill]` in the configuration file.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DrillConfig {
    /// Environment variable holding the URL of the server drills restore into (default: each
    /// source's own connection).
    pub url_env: Option<String>,
    /// Scratch database names start with this (default `coffer_drill`).
    pub database_prefix: Option<String>,
    /// A database the operator created for drills (for a drilling role without CREATEDB).
    pub database: Option<String>,
    /// The role that owns everything a drill restores (as `restore --owner`).
    pub role: Option<String>,
}

impl DrillConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = &self.database_prefix {
            let ok = !p.is_empty()
                && p.len() <= 30
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(format!(
                    "[drill] database-prefix {p:?}: lowercase letters, digits and _ only, \
                     not starting with a digit, at most 30 characters"
                ));
            }
        }
        if self.database.as_deref() == Some("") || self.role.as_deref() == Some("") {
            return Err("[drill] database and role must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod drill_tests {
    use super::*;

    #[test]
    fn a_drill_section_parses_and_bad_values_are_named() {
        let c = parse(
            "[drill]\nurl-env = \"DRILL_URL\"\ndatabase-prefix = \"dr\"\ndatabase = \"app_drill\"\nrole = \"app\"\n",
        )
        .unwrap();
        let d = c.drill.unwrap();
        assert_eq!(d.url_env.as_deref(), Some("DRILL_URL"));
        assert_eq!(d.database.as_deref(), Some("app_drill"));
        assert_eq!(d.role.as_deref(), Some("app"));
        for (bad, says) in [
            (
                "[drill]\ndatabase-prefix = \"Bad-Prefix\"\n",
                "database-prefix",
            ),
            ("[drill]\nrole = \"\"\n", "must not be empty"),
            ("[drill]\nserver = \"x\"\n", "unknown field"),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn restore_arguments_and_role_passwords_are_read_and_checked() {
        let ok = "[sources.db]\nkind = \"postgres\"\ndatabase = \"app\"\n\
                  pg-restore-args = [\"--disable-triggers\"]\nroles-with-passwords = true\n";
        let c = parse(ok).unwrap();
        let Some(SourceConfig::Postgres(p)) = c.sources.get("db") else {
            panic!("no postgres source")
        };
        let pg = pg_source("db", p).unwrap();
        assert_eq!(pg.restore_args, ["--disable-triggers"]);
        assert!(pg.role_passwords);
        let bad = ok.replace("--disable-triggers", "--single-transaction");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(
            e.contains("[sources.db] pg-restore-args: --single-transaction"),
            "{e}"
        );
        let plain = ok.replace("roles-with-passwords", "format = \"plain\"\nx");
        let plain = plain.replace("\nx = true", "");
        let e = format!("{:#}", parse(&plain).unwrap_err());
        assert!(e.contains("plain-SQL"), "{e}");
    }
}

// ---- end of [drill] ---------------------------------------------------------------------------

/// One named source.
#[derive(Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    Postgres(PostgresConfig),
    Path(PathConfig),
    Command(CommandConfig),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresConfig {
    /// Database name (default: the URL's, else `PGDATABASE`).
    pub database: Option<String>,
    /// `postgres://user:password@host:port/db?sslmode=...` (else libpq's environment).
    pub url: Option<Secret>,
    /// Name of an environment variable holding the URL (e.g. `DATABASE_URL`).
    pub url_env: Option<String>,
    /// Words before pg_dump / pg_restore / psql, e.g. ["docker", "compose", "exec", "-T", "db"].
    #[serde(default)]
    pub command_prefix: Vec<String>,
    /// Extra pg_dump arguments.
    #[serde(default)]
    pub pg_dump_args: Vec<String>,
    /// `custom` (default) or `plain`.
    pub format: Option<String>,
    /// `repeatable-read` (default) or `serializable-deferrable`: the isolation of the
    /// transaction whose snapshot is dumped.
    pub consistency: Option<String>,
    /// How long the row count and pg_dump may wait for a table lock (`10s`, `500ms`, `2m`, or
    /// seconds); default: as long as it takes.
    pub lock_timeout: Option<HookTimeout>,
    /// Extra pg_restore arguments (options only, `--name=value`; none of those Coffer sets).
    #[serde(default)]
    pub pg_restore_args: Vec<String>,
    /// Record the password hashes of the roles the dump needs (needs a superuser).
    #[serde(default)]
    pub roles_with_passwords: bool,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PathConfig {
    /// A directory or a single file.
    pub path: PathBuf,
    #[serde(default)]
    pub excludes: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandConfig {
    /// Program and arguments (no shell); its stdout is stored.
    pub command: Vec<String>,
    /// File name in the snapshot, below the source name (default `stdout`).
    pub file_name: Option<String>,
    /// `dump` (small chunks, default) or `files` (large chunks, for tar streams of big files).
    pub chunking: Option<String>,
}

/// The retention policy for `coffer forget`.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this long of the newest (`30d`, `2w`, `1y6m`, `12h`).
    pub keep_within: Option<String>,
    /// Snapshots carrying any of these tags are always kept.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// IANA time zone for the calendar buckets (default: the system's).
    pub timezone: Option<String>,
    /// Which snapshots form one group: any of `host`, `paths`, `tags`, `label:KEY` (default: host, paths).
    pub group_by: Option<Vec<String>>,
}

impl Retention {
    /// At least one rule, a known time zone, known grouping keys.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let rules = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        if let Some(w) = &self.keep_within {
            w.parse::<coffer_repo::retention::KeepWithin>()
                .map_err(|e| format!("[retention] keep-within: {e}"))?;
        }
        if rules.iter().all(Option::is_none)
            && self.keep_tags.is_empty()
            && self.keep_within.is_none()
        {
            return Err("[retention] keeps nothing: set at least one keep-* rule".into());
        }
        if let Some(tz) = &self.timezone {
            jiff::tz::TimeZone::get(tz).map_err(|e| {
                format!("[retention] timezone {tz:?} is not a known time zone: {e}")
            })?;
        }
        if let Some(keys) = &self.group_by {
            keys.join(",")
                .parse::<coffer_repo::retention::GroupBy>()
                .map_err(|e| format!("[retention] group-by: {e}"))?;
        }
        Ok(())
    }
}

/// A loaded configuration and where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
}

impl Loaded {
    /// `p` relative to the config file's directory (an absolute `p` as it is).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// Reads the configuration named by `explicit` (flag or `COFFER_CONFIG`), or `./coffer.toml`
/// if it exists; `None` when there is none.
pub fn load(explicit: Option<&Path>) -> Result<Option<Loaded>> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_FILE);
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let config = parse(&text).with_context(|| format!("in the config file {}", path.display()))?;
    Ok(Some(Loaded { path, config }))
}

/// Parses and validates the TOML text.
pub fn parse(text: &str) -> Result<Config> {
    // The parser's message quotes the offending line, which may hold a database URL.
    let config: Config =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", redact_urls(&e.to_string())))?;
    if let Some(a) = &config.anomaly {
        a.validate().map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(smtp) = config.notify.as_ref().and_then(|n| n.smtp.as_ref()) {
        smtp.validate().map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(d) = &config.drill {
        d.validate().map_err(|e| anyhow::anyhow!(e))?;
    }
    for (name, source) in &config.sources {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || name.starts_with('.')
        {
            bail!("source name {name:?} may only contain letters, digits, '-', '_' and '.'");
        }
        match source {
            SourceConfig::Postgres(p) => {
                if p.url.is_some() && p.url_env.is_some() {
                    bail!("[sources.{name}] has both url and url-env; keep one");
                }
                if let Some(f) = &p.format {
                    if DumpFormat::parse(f).is_none() {
                        bail!("[sources.{name}] format {f:?} is not custom or plain");
                    }
                }
                if let Some(url) = &p.url {
                    PgUrl::parse(&url.0).with_context(|| format!("[sources.{name}] url"))?;
                }
                pg_consistency(name, p).map_err(|e| anyhow::anyhow!(e))?;
                coffer_repo::sources::postgres::validate_restore_args(name, &p.pg_restore_args)?;
                if !p.pg_restore_args.is_empty() && p.format.as_deref() == Some("plain") {
                    bail!("[sources.{name}] pg-restore-args: a plain-SQL dump is restored by psql, not pg_restore");
                }
            }
            SourceConfig::Command(c) => {
                if c.command.is_empty() {
                    bail!("[sources.{name}] command is empty");
                }
                if let Some(ch) = &c.chunking {
                    if ch != "dump" && ch != "files" {
                        bail!("[sources.{name}] chunking {ch:?} is not dump or files");
                    }
                }
                if let Some(f) = &c.file_name {
                    if f.is_empty() || f.contains('/') || f == "." || f == ".." {
                        bail!("[sources.{name}] file-name {f:?} must be a plain file name");
                    }
                }
            }
            SourceConfig::Path(_) => {}
        }
    }
    if let Some(r) = &config.retention {
        r.validate().map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(h) = &config.hooks {
        h.validate().map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(config)
}

/// `scheme://user:password@` becomes `scheme://user:<redacted>@` everywhere in `text`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '/')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(a), Some(colon)) if colon < a => {
                out.push_str(&authority[..colon]);
                out.push_str(":<redacted>");
                out.push_str(&authority[a..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Fills the global options from the file where neither a flag nor the environment set them.
/// (Not in fuzz builds, which compile this file alone: see `fuzz/fuzz_targets/config_file.rs`.)
#[cfg(not(fuzzing))]
pub fn apply_to_global(global: &mut crate::global::GlobalArgs, loaded: &Loaded) {
    let c = &loaded.config;
    if global.repo.is_none() {
        if let Some(r) = &c.repository {
            // A relative local path is relative to the file.
            global.repo = Some(if r.contains("://") || Path::new(r).is_absolute() {
                r.clone()
            } else {
                loaded.resolve(Path::new(r)).to_string_lossy().into_owned()
            });
        }
    }
    let password_given = global.password_file.is_some()
        || global.password_command.is_some()
        || std::env::var_os("COFFER_PASSWORD").is_some();
    if !password_given {
        if let Some(f) = &c.password_file {
            global.password_file = Some(loaded.resolve(f));
        } else if let Some(cmd) = &c.password_command {
            global.password_command = Some(cmd.clone());
        }
    }
}

/// The PostgreSQL URL in the environment variable `var` (`--pg-url-env`, `url-env`).
/// (Not in fuzz builds, which compile this file alone.)
#[cfg(not(fuzzing))]
pub fn url_from_env(var: &str) -> Result<PgUrl> {
    let value = std::env::var(var)
        .map_err(|_| crate::exit::usage(format!("the environment variable {var} is not set")))?;
    PgUrl::parse(&value).with_context(|| format!("the URL in ${var}"))
}

/// The PostgreSQL connection of a source.
pub fn pg_source(name: &str, p: &PostgresConfig) -> Result<PgSource> {
    let url = match (&p.url, &p.url_env) {
        (Some(u), _) => Some(PgUrl::parse(&u.0).with_context(|| format!("[sources.{name}] url"))?),
        (None, Some(var)) => {
            let value = std::env::var(var).with_context(|| {
                format!("[sources.{name}] url-env: the environment variable {var} is not set")
            })?;
            Some(PgUrl::parse(&value).with_context(|| format!("the URL in ${var}"))?)
        }
        (None, None) => None,
    };
    let database = p
        .database
        .clone()
        .or_else(|| url.as_ref().and_then(|u| u.database().map(str::to_string)))
        .or_else(|| std::env::var("PGDATABASE").ok())
        .with_context(|| {
            format!(
                "[sources.{name}] names no database: set database, a URL with one, or PGDATABASE"
            )
        })?;
    let (consistency, lock_timeout) = pg_consistency(name, p).map_err(|e| anyhow::anyhow!(e))?;
    Ok(PgSource {
        database,
        url,
        command_prefix: p.command_prefix.clone(),
        dump_args: p.pg_dump_args.clone(),
        format: p
            .format
            .as_deref()
            .and_then(DumpFormat::parse)
            .unwrap_or(DumpFormat::Custom),
        consistency,
        lock_timeout,
        role_passwords: p.roles_with_passwords,
        restore_args: p.pg_restore_args.clone(),
    })
}

// ---- consistency and lock-timeout of a postgres source (item 6 of issue 15) ----

/// The source's `consistency` and `lock-timeout`, checked: a known word; a positive timeout of
/// at most a day; not both `lock-timeout` and a `--lock-wait-timeout` in `pg-dump-args`; and
/// no `--serializable-deferrable` in `pg-dump-args` (pg_dump refuses it with `--snapshot`: the
/// `consistency` option is the way).
fn pg_consistency(
    name: &str,
    p: &PostgresConfig,
) -> std::result::Result<(Consistency, Option<std::time::Duration>), String> {
    let consistency = match p.consistency.as_deref() {
        None => Consistency::default(),
        Some(word) => Consistency::parse(word).ok_or_else(|| {
            format!(
                "[sources.{name}] consistency {word:?} is not repeatable-read or serializable-deferrable"
            )
        })?,
    };
    if p.pg_dump_args
        .iter()
        .any(|a| a == "--serializable-deferrable")
    {
        return Err(format!(
            "[sources.{name}] pg-dump-args: --serializable-deferrable cannot be combined with the \
             exported snapshot Coffer dumps; set consistency = \"serializable-deferrable\" instead"
        ));
    }
    let from_args = p
        .pg_dump_args
        .iter()
        .any(|a| a.starts_with("--lock-wait-timeout"));
    let millis = match &p.lock_timeout {
        None => return Ok((consistency, None)),
        Some(_) if from_args => {
            return Err(format!(
                "[sources.{name}] has both lock-timeout and --lock-wait-timeout in pg-dump-args; \
                 keep lock-timeout (it applies to pg_dump and to the row count)"
            ))
        }
        Some(HookTimeout::Seconds(n)) => n.checked_mul(1000),
        Some(HookTimeout::Text(t)) => parse_millis(t),
    };
    match millis {
        Some(ms) if ms > 0 && ms <= 86_400_000 => Ok((
            consistency,
            Some(std::time::Duration::from_millis(ms as u64)),
        )),
        _ => Err(format!(
            "[sources.{name}] lock-timeout must be a duration like 500ms, 10s or 2m, at most a day"
        )),
    }
}

/// `500ms`, `10s`, `2m`, `1h`, `1m30s`: numbers each followed by ms, s, m or h; or seconds.
fn parse_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().ok()?.checked_mul(1000);
    }
    let (mut total, mut rest) = (0i64, text);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (!text.is_empty()).then_some(total)
}

/// The backup sources of the file, in name order.
pub fn backup_sources(loaded: &Loaded) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for (name, source) in &loaded.config.sources {
        let input = match source {
            SourceConfig::Path(p) => SourceInput::Path {
                path: loaded.resolve(&p.path),
                excludes: p.excludes.clone(),
            },
            SourceConfig::Postgres(p) => SourceInput::Postgres(Box::new(pg_source(name, p)?)),
            SourceConfig::Command(c) => {
                let (program, args) = c
                    .command
                    .split_first()
                    .with_context(|| format!("[sources.{name}] command is empty"))?;
                SourceInput::Stream {
                    tree_name: format!("{name}/{}", c.file_name.as_deref().unwrap_or("stdout")),
                    stream: StreamSource::Command {
                        program: program.clone(),
                        args: args.to_vec(),
                    },
                    dump_chunking: c.chunking.as_deref() != Some("files"),
                }
            }
        };
        out.push(Source {
            name: Some(name.clone()),
            input,
        });
    }
    Ok(out)
}

/// `[notify]` in the configuration file.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    /// URLs that get the JSON body by POST after each run.
    #[serde(default)]
    pub webhook: Vec<String>,
    /// Healthchecks-style ping URLs (`/start`, success, `/fail`).
    #[serde(default)]
    pub ping: Vec<String>,
    /// `always` (default) or `failure`: whether webhooks and email hear of successful runs
    /// too. Pings are always sent: their silence is what raises a dead man's switch.
    pub on: Option<String>,
    /// Email over SMTP (`[notify.smtp]`).
    pub smtp: Option<SmtpConfig>,
}

/// `[notify.smtp]`: one mail server, one sender, one or more recipients. The password is never
/// in this file: `password-file` or `password-env` names where it is.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    pub port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS, "SMTPS") or `none` (loopback hosts only).
    pub tls: Option<String>,
    pub user: Option<String>,
    /// A file whose first line is the SMTP password (relative to the config file's directory).
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the SMTP password.
    pub password_env: Option<String>,
    /// PEM certificates to trust instead of the system's (a private CA, a self-signed server).
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    /// Present only to refuse it with a clear message: the password is never in the file.
    #[serde(default)]
    pub password: Option<serde::de::IgnoredAny>,
}

impl SmtpConfig {
    /// The checks that need nothing but the file's text (the addresses are parsed, the
    /// password and CA files read, when a run starts: `crate::mail::Mailer::new`).
    pub fn validate(&self) -> Result<(), String> {
        if self.password.is_some() {
            return Err(
                "[notify.smtp] password: the SMTP password is never written in the \
                        configuration; name a file with password-file or an environment \
                        variable with password-env"
                    .into(),
            );
        }
        if self.host.trim().is_empty() {
            return Err("[notify.smtp] host is empty".into());
        }
        match self.tls.as_deref() {
            None | Some("starttls" | "tls") => {}
            Some("none") if is_loopback(&self.host) => {}
            Some("none") => {
                return Err(format!(
                    "[notify.smtp] tls = \"none\" is only allowed for a loopback host \
                     (localhost, 127.0.0.1, ::1), not {:?}: use \"starttls\" or \"tls\"",
                    self.host
                ))
            }
            Some(other) => {
                return Err(format!(
                    "[notify.smtp] tls = {other:?}: use \"starttls\", \"tls\" or \"none\""
                ))
            }
        }
        if self.port == Some(0) {
            return Err("[notify.smtp] port must be between 1 and 65535".into());
        }
        match (&self.user, &self.password_file, &self.password_env) {
            (Some(_), Some(_), Some(_)) => {
                Err("[notify.smtp] has both password-file and password-env; keep one".into())
            }
            (Some(_), None, None) => Err(
                "[notify.smtp] user is set but no password: add password-file or password-env"
                    .into(),
            ),
            (None, Some(_), _) | (None, _, Some(_)) => {
                Err("[notify.smtp] a password is given but no user".into())
            }
            _ if self.to.is_empty() => {
                Err("[notify.smtp] to is empty: name at least one recipient".into())
            }
            _ => Ok(()),
        }
    }
}

/// `localhost`, `127.0.0.0/8`, `::1` (bracketed or not).
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[anomaly]` in the configuration file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Thresholds {
    /// Warn when a size (or row total) is below this fraction of the median.
    pub smaller_than: f64,
    /// Warn when a size is above this multiple of the median.
    pub larger_than: f64,
    /// How many earlier snapshots form the median.
    pub history: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            smaller_than: 0.5,
            larger_than: 3.0,
            history: 7,
        }
    }
}

impl Thresholds {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.smaller_than > 0.0 && self.smaller_than < 1.0) {
            return Err("[anomaly] smaller-than must be between 0 and 1 (e.g. 0.5)".into());
        }
        if self.larger_than <= 1.0 || !self.larger_than.is_finite() {
            return Err("[anomaly] larger-than must be above 1 (e.g. 3.0)".into());
        }
        if self.history == 0 {
            return Err("[anomaly] history must be at least 1".into());
        }
        Ok(())
    }
}

// ---- [hooks] (item 5 of issue 15) ----

/// The default time a hook may run before it is stopped.
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `[hooks]` in the configuration file: command lines run through `sh -c` (the config is the
/// operator's own) before and after backups and restores.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HooksConfig {
    pub before_backup: Option<String>,
    pub after_backup: Option<String>,
    pub before_restore: Option<String>,
    pub after_restore: Option<String>,
    /// How long each hook may run: seconds, or a number with a unit (`90s`, `5m`, `1h`);
    /// default 5 minutes.
    pub timeout: Option<HookTimeout>,
}

/// `timeout` in `[hooks]`: a number of seconds or a text with a unit.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum HookTimeout {
    Seconds(i64),
    Text(String),
}

impl HooksConfig {
    /// The hook command line for `name` (`before-backup` ...), if one is set.
    pub fn command(&self, name: &str) -> Option<&str> {
        match name {
            "before-backup" => self.before_backup.as_deref(),
            "after-backup" => self.after_backup.as_deref(),
            "before-restore" => self.before_restore.as_deref(),
            "after-restore" => self.after_restore.as_deref(),
            _ => None,
        }
        .filter(|c| !c.trim().is_empty())
    }

    /// The timeout of each hook.
    pub fn timeout(&self) -> std::result::Result<std::time::Duration, String> {
        let seconds = match &self.timeout {
            None => return Ok(DEFAULT_HOOK_TIMEOUT),
            Some(HookTimeout::Seconds(n)) => *n,
            Some(HookTimeout::Text(t)) => parse_seconds(t).ok_or_else(|| {
                format!("[hooks] timeout {t:?} is not a duration like 90s, 5m or 1h")
            })?,
        };
        if seconds <= 0 || seconds > 7 * 86_400 {
            return Err(format!(
                "[hooks] timeout must be between 1 second and 7 days, not {seconds} seconds"
            ));
        }
        Ok(std::time::Duration::from_secs(seconds as u64))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.timeout().map(|_| ())
    }
}

/// `90`, `90s`, `5m`, `1h`, `1h30m`: seconds, or numbers each followed by s, m or h.
fn parse_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let (mut total, mut digits) = (0i64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    digits
        .is_empty()
        .then_some(total)
        .filter(|_| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEAVESTREAM: &str = r#"
repository = "/srv/backups/weavestream"
password-file = "/etc/coffer/password"
tags = ["nightly"]
labels = { app = "weavestream" }

[sources.db]
kind = "postgres"
database = "weavestream"
command-prefix = ["docker", "compose", "exec", "-T", "postgres"]

[sources.files]
kind = "path"
path = "/opt/weavestream/data/files"
excludes = ["*.tmp"]

[sources.env]
kind = "path"
path = "/opt/weavestream/.env"

[retention]
keep-last = 3
keep-daily = 7
keep-weekly = 4
keep-monthly = 12
timezone = "America/New_York"
"#;

    #[test]
    fn urls_in_messages_are_redacted() {
        assert_eq!(
            redact_urls("at url = \"postgres://app:s3cr:et@db:5432/x\" here"),
            "at url = \"postgres://app:<redacted>@db:5432/x\" here"
        );
        assert_eq!(
            redact_urls("s3://bucket/x and http://h:80/"),
            "s3://bucket/x and http://h:80/"
        );
        let e = format!(
            "{:#}",
            parse("[sources.db]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h/db\nx = 1\n")
                .unwrap_err()
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(WEAVESTREAM).unwrap();
        assert_eq!(c.sources.len(), 3);
        let r = c.retention.unwrap();
        assert_eq!(r.keep_daily, Some(7));
        assert_eq!(r.timezone.as_deref(), Some("America/New_York"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = format!("{:#}", parse("repositry = \"x\"").unwrap_err());
        assert!(e.contains("repositry"), "{e}");
        let e = format!(
            "{:#}",
            parse("[sources.db]\nkind = \"postgres\"\ndatabse = \"x\"").unwrap_err()
        );
        assert!(e.contains("databse"), "{e}");
        let e = format!("{:#}", parse("[retention]\nkeep-dayly = 3").unwrap_err());
        assert!(e.contains("keep-dayly"), "{e}");
        let e = format!("{:#}", parse("[sources.x]\nkind = \"ftp\"").unwrap_err());
        assert!(e.contains("ftp"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse("[retention]\nkeep-daily = 3\ntimezone = \"Mars/Olympus\"").is_err());
        assert!(parse("[retention]\ntimezone = \"UTC\"").is_err());
        assert!(parse("[retention]\nkeep-last = 1\ngroup-by = [\"color\"]").is_err());
        assert!(parse("[sources.\"a b\"]\nkind = \"path\"\npath = \"/x\"").is_err());
        assert!(parse("[sources.c]\nkind = \"command\"\ncommand = []").is_err());
    }

    #[test]
    fn a_url_password_never_shows() {
        let c = parse("[sources.db]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h/db\"\n")
            .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let SourceConfig::Postgres(p) = &c.sources["db"] else {
            panic!("not postgres")
        };
        let pg = pg_source("db", p).unwrap();
        assert_eq!(pg.database, "db");
        assert!(!format!("{pg:?}").contains("hunter2"));
        let e = format!(
            "{:#}",
            parse("[sources.db]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h:x/db\"\n")
                .unwrap_err()
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn hooks_parse_with_their_timeout() {
        let c = parse(
            "[hooks]\nbefore-backup = \"docker compose stop app\"\nafter-backup = \"x\"\ntimeout = \"1m30s\"\n",
        )
        .unwrap();
        let h = c.hooks.unwrap();
        assert_eq!(h.command("before-backup"), Some("docker compose stop app"));
        assert_eq!(h.command("before-restore"), None);
        assert_eq!(h.timeout().unwrap().as_secs(), 90);
        let c = parse("[hooks]\ntimeout = 20\n").unwrap();
        assert_eq!(c.hooks.unwrap().timeout().unwrap().as_secs(), 20);
        let c = parse("[hooks]\nafter-restore = \"y\"\n").unwrap();
        assert_eq!(c.hooks.unwrap().timeout().unwrap(), DEFAULT_HOOK_TIMEOUT);
        for bad in [
            "timeout = \"5 minutes\"",
            "timeout = 0",
            "timeout = \"m\"",
            "timeout = -3",
            "befor-backup = \"x\"",
        ] {
            let e = parse(&format!("[hooks]\n{bad}\n")).unwrap_err();
            let text = format!("{e:#}");
            assert!(
                text.contains("timeout") || text.contains("befor-backup"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn consistency_and_lock_timeout_parse_and_refuse_conflicts() {
        let source = |extra: &str| {
            parse(&format!(
                "[sources.db]\nkind = \"postgres\"\ndatabase = \"app\"\n{extra}\n"
            ))
        };
        let c =
            source("consistency = \"serializable-deferrable\"\nlock-timeout = \"1m30s\"").unwrap();
        let Some(SourceConfig::Postgres(p)) = c.sources.get("db") else {
            panic!()
        };
        let pg = pg_source("db", p).unwrap();
        assert_eq!(pg.consistency, Consistency::SerializableDeferrable);
        assert_eq!(pg.lock_timeout, Some(std::time::Duration::from_secs(90)));
        let c = source("lock-timeout = \"500ms\"").unwrap();
        let Some(SourceConfig::Postgres(p)) = c.sources.get("db") else {
            panic!()
        };
        let pg = pg_source("db", p).unwrap();
        assert_eq!(pg.consistency, Consistency::RepeatableRead);
        assert_eq!(pg.lock_timeout, Some(std::time::Duration::from_millis(500)));
        assert!(pg
            .dump_arguments("S")
            .contains(&"--lock-wait-timeout=500".to_string()));
        for (bad, says) in [
            ("consistency = \"serializable\"", "consistency"),
            ("lock-timeout = \"soon\"", "lock-timeout"),
            ("lock-timeout = 0", "lock-timeout"),
            ("lock-timeout = \"2d\"", "lock-timeout"),
            (
                "lock-timeout = 5\npg-dump-args = [\"--lock-wait-timeout=100\"]",
                "both lock-timeout",
            ),
            (
                "pg-dump-args = [\"--serializable-deferrable\"]",
                "consistency = \"serializable-deferrable\"",
            ),
        ] {
            let e = format!("{:#}", source(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
