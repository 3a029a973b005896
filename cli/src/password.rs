//! Where the password comes from: a file, a command, the environment, or a no-echo prompt.
//! Never from a command-line argument. The password is zeroized when dropped.

use crate::global::GlobalArgs;
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use zeroize::Zeroizing;

pub type Password = Zeroizing<Vec<u8>>;

fn strip_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    bytes
}

/// The repository password, by precedence: --password-file / COFFER_PASSWORD_FILE,
/// --password-command / COFFER_PASSWORD_COMMAND, COFFER_PASSWORD, then a prompt on a terminal.
pub fn get(global: &GlobalArgs, confirm: bool) -> Result<Password> {
    get_from(
        &Sources {
            file: global.password_file.as_deref(),
            command: global.password_command.as_deref(),
            env: "COFFER_PASSWORD",
            prompt: "repository password: ",
        },
        confirm,
    )
}

/// Where one repository's password may come from.
pub struct Sources<'a> {
    pub file: Option<&'a std::path::Path>,
    pub command: Option<&'a str>,
    /// The environment variable holding the password itself.
    pub env: &'a str,
    pub prompt: &'a str,
}

/// The password from the first source set: file, command, environment variable, prompt.
pub fn get_from(sources: &Sources<'_>, confirm: bool) -> Result<Password> {
    let password = if let Some(path) = sources.file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the password file {}", path.display()))?;
        let first_line = bytes
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .to_vec();
        Zeroizing::new(strip_newline(first_line))
    } else if let Some(command) = sources.command {
        let out = coffer_repo::sources::child::command("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running the password command")?;
        if !out.status.success() {
            bail!("the password command failed ({})", out.status);
        }
        Zeroizing::new(strip_newline(out.stdout))
    } else if let Some(p) = std::env::var_os(sources.env) {
        Zeroizing::new(p.into_encoded_bytes())
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(sources.prompt).context("reading the password")?,
        );
        if confirm {
            let second = Zeroizing::new(
                rpassword::prompt_password("repeat the password: ")
                    .context("reading the password")?,
            );
            if *first != *second {
                bail!("the passwords do not match");
            }
        }
        Zeroizing::new(first.as_bytes().to_vec())
    } else {
        return Err(crate::exit::usage(format!(
            "no password given: set {env}_FILE, {env}_COMMAND or {env}, or run on a terminal",
            env = sources.env
        )));
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// A second password for `key add`: COFFER_NEW_PASSWORD_FILE, or a prompt.
pub fn get_new() -> Result<Password> {
    if let Some(path) = std::env::var_os("COFFER_NEW_PASSWORD_FILE") {
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading the new password file {}", path.to_string_lossy()))?;
        let first_line = bytes
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .to_vec();
        let p = Zeroizing::new(first_line);
        if p.is_empty() {
            bail!("the new password is empty");
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(crate::exit::usage(
            "no new password: set COFFER_NEW_PASSWORD_FILE or run on a terminal",
        ));
    }
    let first = Zeroizing::new(rpassword::prompt_password("new password: ")?);
    let second = Zeroizing::new(rpassword::prompt_password("repeat the new password: ")?);
    if *first != *second {
        bail!("the passwords do not match");
    }
    if first.is_empty() {
        bail!("the new password is empty");
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}
