//! Command-line structure and the options every command shares.

use crate::commands::Command;
use clap::{Args, Parser};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "coffer",
    version,
    about = "Encrypted, deduplicated backups of databases, files and secrets",
    long_about = "Coffer backs up directories, files, database dumps and command output into an \
                  encrypted, deduplicated, compressed repository, and restores them byte for byte.\n\n\
                  The password never goes on the command line: set COFFER_PASSWORD_FILE, \
                  COFFER_PASSWORD_COMMAND or COFFER_PASSWORD, or type it at the prompt.",
    after_help = crate::exit::TABLE
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository location: a local path, file:///path, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX
    #[arg(
        short = 'r',
        long = "repo",
        env = "COFFER_REPO",
        global = true,
        value_name = "URL"
    )]
    pub repo: Option<String>,

    /// Read the password from this file (first line)
    #[arg(long, env = "COFFER_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Run this shell command and use its output as the password
    #[arg(
        long,
        env = "COFFER_PASSWORD_COMMAND",
        global = true,
        value_name = "COMMAND"
    )]
    pub password_command: Option<String>,

    /// Configuration file (default: ./coffer.toml if it exists); see docs/config.md
    #[arg(long, env = "COFFER_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Storage option KEY=VALUE for s3:// and gs:// (object_store's keys, e.g. region=eu-west-1,
    /// endpoint=http://127.0.0.1:9000, allow_http=true; max_retries=N, retry_timeout=30s).
    /// Repeatable. Put credentials in the environment, not here: argv is visible to other users
    #[arg(
        long = "option",
        short = 'o',
        global = true,
        value_name = "KEY=VALUE",
        value_parser = parse_option
    )]
    pub options: Vec<(String, String)>,

    /// Requests to run at once against the storage [default: 8 for s3:// and gs://, 2 for local]
    #[arg(
        long,
        env = "COFFER_CONNECTIONS",
        global = true,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub connections: Option<u16>,

    /// Limit uploads to this many KiB/s, summed over all connections [default: unlimited]
    #[arg(
        long,
        env = "COFFER_LIMIT_UPLOAD",
        global = true,
        value_name = "KIB_PER_S",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub limit_upload: Option<u64>,

    /// Limit downloads to this many KiB/s, summed over all connections [default: unlimited]
    #[arg(
        long,
        env = "COFFER_LIMIT_DOWNLOAD",
        global = true,
        value_name = "KIB_PER_S",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub limit_download: Option<u64>,

    /// Don't use the local cache of snapshots, index files and trees (object stores only)
    #[arg(long, global = true)]
    pub no_cache: bool,

    /// Print nothing on success (warnings and errors still go to stderr)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print what is being done on stderr: -v each phase with its duration, -vv each file too
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// If another run of this command and configuration is in progress, exit at once (code 14) instead of
    /// waiting for it
    #[arg(long, global = true)]
    pub no_wait: bool,

    /// After backup, forget, prune, check, drill or copy, POST the result as JSON to this URL
    /// (a webhook), or with `ping:URL` ping it healthchecks-style (URL/start, URL, URL/fail).
    /// Repeatable; adds to `[notify]` in the config. A failed notification is a warning only
    #[arg(long, global = true, value_name = "URL")]
    pub notify: Vec<String>,
}

/// `KEY=VALUE` for `--option`. The value is never echoed in errors (it may be a credential).
pub fn parse_option(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "an option must be KEY=VALUE".to_string())?;
    let k = k.trim();
    if k.is_empty() || k.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{k:?} is not a valid option key"));
    }
    Ok((k.to_ascii_lowercase(), v.to_string()))
}

impl std::fmt::Debug for OptionPairs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}=<redacted>")))
            .finish()
    }
}

/// Option pairs shown with their values redacted.
pub struct OptionPairs<'a>(pub &'a [(String, String)]);

impl GlobalArgs {
    /// How to open the storage: options, connections and the cache, for `--repo` (the copy
    /// command builds its own for `--from-repo`).
    pub fn storage_options(&self, options: &[(String, String)]) -> coffer_repo::StorageOptions {
        coffer_repo::StorageOptions {
            options: options.to_vec(),
            connections: self.connections.map(usize::from),
            cache_root: if self.no_cache {
                None
            } else {
                coffer_repo::storage::cache::default_root()
            },
            limit_upload: self.limit_upload,
            limit_download: self.limit_download,
        }
    }

    /// The repository location or a usage error.
    pub fn repo(&self) -> anyhow::Result<&str> {
        self.repo
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                crate::exit::usage("no repository given: pass --repo URL or set COFFER_REPO")
            })
    }
}

impl std::fmt::Debug for GlobalArgs {
    /// Option values may be credentials: they are never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalArgs")
            .field(
                "repo",
                &self
                    .repo
                    .as_deref()
                    .map(coffer_repo::storage::scrub_url_credentials),
            )
            .field("password_file", &self.password_file)
            .field(
                "password_command",
                &self.password_command.as_ref().map(|_| "<set>"),
            )
            .field("options", &OptionPairs(&self.options))
            .field("connections", &self.connections)
            .field("no_cache", &self.no_cache)
            .field("quiet", &self.quiet)
            .field("verbose", &self.verbose)
            .field("no_wait", &self.no_wait)
            .field(
                "notify",
                &self
                    .notify
                    .iter()
                    .map(|u| crate::notify::shown(u.strip_prefix("ping:").unwrap_or(u)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
