//! `coffer key`: several passwords for one repository (one key file each).

use super::Context_;
use anyhow::Result;
use coffer_repo::format::keyfile::KeyFile;
use coffer_repo::KdfParams;

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password (read from COFFER_NEW_PASSWORD_FILE or a prompt)
    Add {
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
    },
    /// List key files
    List,
}

pub fn run(ctx: &Context_, cmd: KeyCommand) -> Result<u8> {
    // Checked before the repository is opened or a password asked for.
    if let KeyCommand::Add {
        argon2_memory_kib,
        argon2_iterations,
        argon2_lanes,
        insecure_kdf,
    } = &cmd
    {
        let kdf = KdfParams {
            memory_kib: *argon2_memory_kib,
            iterations: *argon2_iterations,
            parallelism: *argon2_lanes,
        };
        super::init::check_kdf(&kdf, *insecure_kdf)?;
    }
    let repo = super::open_repo(ctx)?;
    match cmd {
        KeyCommand::Add {
            argon2_memory_kib,
            argon2_iterations,
            argon2_lanes,
            insecure_kdf: _,
        } => {
            let new = crate::password::get_new()?;
            let kdf = KdfParams {
                memory_kib: argon2_memory_kib,
                iterations: argon2_iterations,
                parallelism: argon2_lanes,
            };
            let id = repo.add_password(&new, kdf, &super::hostname(), &super::username())?;
            outln!("added key file {}", id.short());
        }
        KeyCommand::List => {
            for (key, _) in repo.storage().list_objects("keys")?.objects {
                let name = key.rsplit('/').next().unwrap_or(&key).to_string();
                let bytes = repo.storage().get_bounded(
                    "key file",
                    &key,
                    coffer_repo::format::keyfile::MAX_KEY_FILE_SIZE,
                )?;
                let current = if name == repo.key_id().to_hex() {
                    "*"
                } else {
                    " "
                };
                match KeyFile::parse(&name, &bytes) {
                    Ok(k) => outln!(
                        "{current} {}  {}  {}@{}",
                        crate::escape::name(name.get(..8).unwrap_or(&name)),
                        crate::escape::name(&k.created),
                        crate::escape::name(&k.username),
                        crate::escape::name(&k.hostname)
                    ),
                    Err(e) => outln!(
                        "{current} {}  damaged: {}",
                        crate::escape::name(name.get(..8).unwrap_or(&name)),
                        crate::escape::message(&e.to_string())
                    ),
                }
            }
        }
    }
    Ok(crate::exit::OK)
}
