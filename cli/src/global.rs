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

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository location: a local path or file:///path
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

    /// Print less
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl GlobalArgs {
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
