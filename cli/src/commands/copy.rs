//! `coffer copy`: copy snapshots and the data they need from another repository into this one.

use super::Context_;
use crate::output;
use anyhow::{Context, Result};
use coffer_repo::ops::copy::{self as op, CopyOptions};
use coffer_repo::{OpenMode, Repository, Storage};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer copy --repo s3://backups/app --from-repo /var/backups/app
  coffer copy --repo s3://backups/app --from-repo /var/backups/app latest

The target (--repo) and the source (--from-repo) have their own passwords and keys. The source
password comes from --from-password-file, --from-password-command or COFFER_FROM_PASSWORD.
Snapshots copied before are skipped; an interrupted copy resumes without uploading again.")]
pub struct Args {
    /// The repository to copy from
    #[arg(long, env = "COFFER_FROM_REPO", value_name = "URL")]
    pub from_repo: String,
    /// Read the source repository's password from this file (first line)
    #[arg(long, env = "COFFER_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the source repository's password
    #[arg(long, env = "COFFER_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    pub from_password_command: Option<String>,
    /// Storage option KEY=VALUE for the source repository (repeatable; see --option)
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::global::parse_option)]
    pub from_option: Vec<(String, String)>,
    /// Uploaded packs between index checkpoints (what an interrupted copy keeps)
    #[arg(long, value_name = "N", default_value_t = op::DEFAULT_INDEX_EVERY_PACKS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub index_every: u32,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Snapshots to copy (`latest`, ids or prefixes); default: all
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let from_options = ctx.global.storage_options(&args.from_option);
    let source_storage = Storage::open_with(&args.from_repo, OpenMode::Existing, &from_options)?;
    let source_password = crate::password::get_from(
        &crate::password::Sources {
            file: args.from_password_file.as_deref(),
            command: args.from_password_command.as_deref(),
            env: "COFFER_FROM_PASSWORD",
            prompt: "source repository password: ",
        },
        false,
    )?;
    let shown = source_storage.location().to_string();
    let source = Repository::open(source_storage, &source_password)
        .with_context(|| format!("opening the source repository {shown}"))?;
    let mut target = super::open_repo(ctx)?;
    if source.config().id == target.config().id {
        return Err(crate::exit::usage(
            "--from-repo and --repo are the same repository",
        ));
    }
    let options = CopyOptions {
        snapshots: args.snapshots.clone(),
        cancel: ctx.cancel.clone(),
        index_every_packs: args.index_every as usize,
        progress: Default::default(),
    };
    let display = crate::progress::start_bar(
        ctx,
        args.json,
        "copy",
        "snapshots",
        options.progress.clone(),
    )?;
    let report = op::copy(&source, &mut target, &options);
    display.finish();
    let report = report.context("copy failed")?;
    for w in &report.warnings {
        eprintln!("warning: {}", crate::escape::message(&w.to_string()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !ctx.global.quiet {
        for (from, to) in &report.copied {
            println!("snapshot {} copied as {}", from.short(), to.short());
        }
        for (from, to) in &report.already_present {
            println!("snapshot {} already copied as {}", from.short(), to.short());
        }
        println!(
            "copied {} snapshot(s): read {}, uploaded {} in {} new blobs, {} packs",
            report.copied.len(),
            output::bytes(report.bytes_read),
            output::bytes(report.added_stored_bytes),
            report.data_blobs_new + report.tree_blobs_new,
            report.packs_written
        );
    }
    Ok(crate::exit::OK)
}
