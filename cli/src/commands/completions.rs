//! `coffer completions SHELL` and `coffer man`: shell completions and man pages generated from
//! the same clap definitions as `--help`, so they never drift from the real options.

use super::Context_;
use anyhow::{Context as _, Result};
use clap::CommandFactory;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer completions bash > /etc/bash_completion.d/coffer
  coffer completions zsh > \"${fpath[1]}/_coffer\"
  coffer completions fish > ~/.config/fish/completions/coffer.fish")]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  coffer man --dir /usr/local/share/man/man1   (coffer.1 and one page per command)
  coffer man | man -l -")]
pub struct ManArgs {
    /// Write coffer.1 and coffer-COMMAND.1 into this directory (default: coffer.1 to stdout)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(_ctx: &Context_, args: CompletionsArgs) -> Result<u8> {
    let mut cmd = crate::global::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "coffer", &mut out);
    write_stdout(&out)?;
    Ok(crate::exit::OK)
}

pub fn man(_ctx: &Context_, args: ManArgs) -> Result<u8> {
    let cmd = crate::global::Cli::command();
    let Some(dir) = args.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        write_stdout(&out)?;
        return Ok(crate::exit::OK);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = vec![("coffer".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        // clap names are `&'static str`; this process writes a handful of pages and ends.
        let name: &'static str = Box::leak(format!("coffer-{}", sub.get_name()).into_boxed_str());
        pages.push((name.to_string(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(crate::exit::OK)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    std::io::stdout()
        .lock()
        .write_all(bytes)
        .map_err(|source| coffer_repo::Error::Io {
            operation: "writing",
            path: "standard output".into(),
            source,
        })?;
    Ok(())
}
