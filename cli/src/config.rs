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
use coffer_repo::sources::postgres::{DumpFormat, PgSource, PgUrl};
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
    fn resolve(&self, p: &Path) -> PathBuf {
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
        role_passwords: p.roles_with_passwords,
        restore_args: p.pg_restore_args.clone(),
    })
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
    /// `always` (default) or `failure`: whether webhooks hear of successful runs too. Pings
    /// are always sent: their silence is what raises a dead man's switch.
    pub on: Option<String>,
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
}
