//! `coffer key`: several passwords for one repository (one key file each): list, add, remove,
//! and change the password that opened the repository.
//!
//! New passwords come from `COFFER_NEW_PASSWORD_FILE` or a prompt, never argv. A key file is
//! removed only while another readable one remains, and the one in use only with `--force`:
//! a repository whose last key file is gone can never be read again.

use super::Context_;
use anyhow::{Context as _, Result};
use coffer_repo::format::keyfile::{KeyFile, MAX_KEY_FILE_SIZE};
use coffer_repo::{KdfParams, Repository};

/// The Argon2id cost of a new key file (`key add`, `key passwd`).
#[derive(clap::Args, Debug)]
pub struct KdfArgs {
    /// Argon2id memory cost in KiB
    #[arg(long, value_name = "KIB", default_value_t = KdfParams::DEFAULT.memory_kib)]
    argon2_memory_kib: u32,
    /// Argon2id passes
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.iterations)]
    argon2_iterations: u32,
    /// Argon2id lanes, computed on that many cores at once
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.parallelism)]
    argon2_lanes: u32,
    /// Accept Argon2id costs below the minimum (19 MiB with 2 passes, or 46 MiB with 1),
    /// with a warning: for tests and benchmarks, never for real passwords
    #[arg(long)]
    insecure_kdf: bool,
    /// Print JSON: `{"added": ID}` (add) or `{"added": ID, "removed": ID}` (passwd)
    #[arg(long)]
    json: bool,
}

impl KdfArgs {
    /// The parameters, refused below the floor (a usage error) before any password is asked.
    fn checked(&self) -> Result<KdfParams> {
        let kdf = KdfParams {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_lanes,
        };
        super::init::check_kdf(&kdf, self.insecure_kdf)?;
        Ok(kdf)
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password (read from COFFER_NEW_PASSWORD_FILE or a prompt)
    Add {
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// List key files; `*` marks the one whose password opened the repository
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a key file (id or unique prefix); never the last one
    Remove {
        /// The key file's id or a unique prefix of it (see `coffer key list`)
        id: String,
        /// Allow removing the key file whose password is in use
        #[arg(long)]
        force: bool,
        /// Print JSON: `{"removed": ID}`
        #[arg(long)]
        json: bool,
    },
    /// Change the password in use: a new key file (new password from COFFER_NEW_PASSWORD_FILE
    /// or a prompt) replaces the one that opened the repository
    Passwd {
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

/// One object in `keys/`: its id (the object name) and the parsed key file or why not.
struct Listed {
    id: String,
    file: std::result::Result<KeyFile, String>,
}

fn list_keys(repo: &Repository) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (key, _) in repo.storage().list_objects("keys")?.objects {
        let id = key.rsplit('/').next().unwrap_or(&key).to_string();
        let bytes = repo
            .storage()
            .get_bounded("key file", &key, MAX_KEY_FILE_SIZE)?;
        let file = KeyFile::parse(&id, &bytes).map_err(|e| e.to_string());
        out.push(Listed { id, file });
    }
    Ok(out)
}

/// A key command with its KDF parameters checked.
enum Action {
    Add(KdfParams, bool),
    Passwd(KdfParams, bool),
    Remove { id: String, force: bool, json: bool },
    List { json: bool },
}

pub fn run(ctx: &Context_, cmd: KeyCommand) -> Result<u8> {
    // Checked before the repository is opened or a password asked for.
    let action = match cmd {
        KeyCommand::Add { kdf } => Action::Add(kdf.checked()?, kdf.json),
        KeyCommand::Passwd { kdf } => Action::Passwd(kdf.checked()?, kdf.json),
        KeyCommand::Remove { id, force, json } => Action::Remove { id, force, json },
        KeyCommand::List { json } => Action::List { json },
    };
    let repo = super::open_repo(ctx)?;
    match action {
        Action::Add(kdf, json) => {
            let new = crate::password::get_new()?;
            let id = repo.add_password(&new, kdf, &super::hostname(), &super::username())?;
            if json {
                outln!("{}", serde_json::json!({ "added": id.to_hex() }));
            } else if !ctx.global.quiet {
                outln!("added key file {}", id.short());
            }
        }
        Action::Passwd(kdf, json) => passwd(ctx, &repo, kdf, json)?,
        Action::Remove { id, force, json } => remove(ctx, &repo, &id, force, json)?,
        Action::List { json } => list(&repo, json)?,
    }
    Ok(crate::exit::OK)
}

/// `key passwd`: the new key file first, then the old one goes, so that at no moment is the
/// repository without a key for this user.
fn passwd(ctx: &Context_, repo: &Repository, kdf: KdfParams, json: bool) -> Result<()> {
    let new = crate::password::get_new()?;
    let id = repo.add_password(&new, kdf, &super::hostname(), &super::username())?;
    let old = repo.key_id().to_hex();
    let old_short = old.get(..8).unwrap_or(&old);
    repo.storage()
        .delete(&format!("keys/{old}"))
        .with_context(|| {
            format!(
                "the new key file {} was added, but the old one {old_short} could not be removed \
                 (remove it with `coffer key remove {old_short} --force`)",
                id.short()
            )
        })?;
    if json {
        outln!(
            "{}",
            serde_json::json!({ "added": id.to_hex(), "removed": old })
        );
    } else if !ctx.global.quiet {
        outln!(
            "password changed: key file {} replaces {old_short}",
            id.short()
        );
    }
    Ok(())
}

/// `key remove`: resolve the prefix, refuse the last readable key file and (without `--force`)
/// the one in use, then delete.
fn remove(ctx: &Context_, repo: &Repository, spec: &str, force: bool, json: bool) -> Result<()> {
    let keys = list_keys(repo)?;
    let wanted = spec.to_ascii_lowercase();
    if wanted.len() < 4 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(crate::exit::usage(format!(
            "{:?} is not a key id: give at least 4 hex digits (see `coffer key list`)",
            crate::escape::name(spec)
        )));
    }
    let matching: Vec<&Listed> = keys.iter().filter(|k| k.id.starts_with(&wanted)).collect();
    let target = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(crate::exit::usage(format!(
                "no key file {wanted} in this repository (see `coffer key list`)"
            )))
        }
        _ => {
            return Err(crate::exit::usage(format!(
                "{wanted} names {} key files: give more digits",
                matching.len()
            )))
        }
    };
    let short = target.id.get(..8).unwrap_or(&target.id);
    let others = keys
        .iter()
        .filter(|k| k.id != target.id && k.file.is_ok())
        .count();
    if others == 0 {
        return Err(crate::exit::usage(format!(
            "refusing to remove key file {short}: it is the last readable key file, and without \
             one the repository can never be opened again; add another password first \
             (`coffer key add`)"
        )));
    }
    if target.id == repo.key_id().to_hex() && !force {
        return Err(crate::exit::usage(format!(
            "refusing to remove key file {short}: its password is the one in use; pass --force \
             if this password should stop working (or use `coffer key passwd` to change it)"
        )));
    }
    repo.storage().delete(&format!("keys/{}", target.id))?;
    if json {
        outln!("{}", serde_json::json!({ "removed": target.id }));
    } else if !ctx.global.quiet {
        outln!("removed key file {short}");
    }
    Ok(())
}

fn list(repo: &Repository, json: bool) -> Result<()> {
    let current = repo.key_id().to_hex();
    let keys = list_keys(repo)?;
    if json {
        let values: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                let mut v = serde_json::json!({
                    "id": k.id,
                    "short_id": k.id.get(..8).unwrap_or(&k.id),
                    "current": k.id == current,
                });
                match &k.file {
                    Ok(f) => {
                        v["created"] = f.created.clone().into();
                        v["username"] = f.username.clone().into();
                        v["hostname"] = f.hostname.clone().into();
                        v["kdf"] = serde_json::json!({
                            "memory_kib": f.kdf.memory_kib,
                            "iterations": f.kdf.iterations,
                            "parallelism": f.kdf.parallelism,
                        });
                    }
                    Err(e) => v["error"] = e.clone().into(),
                }
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(());
    }
    for k in &keys {
        let marker = if k.id == current { "*" } else { " " };
        let short = crate::escape::name(k.id.get(..8).unwrap_or(&k.id));
        match &k.file {
            Ok(f) => outln!(
                "{marker} {short}  {}  {}@{}  argon2id {} MiB, {} passes",
                crate::escape::name(&f.created),
                crate::escape::name(&f.username),
                crate::escape::name(&f.hostname),
                f.kdf.memory_kib / 1024,
                f.kdf.iterations
            ),
            Err(e) => outln!("{marker} {short}  damaged: {}", crate::escape::message(e)),
        }
    }
    Ok(())
}
