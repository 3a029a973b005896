//! `coffer init`: create a repository.

use super::Context_;
use anyhow::Result;
use coffer_repo::{InitOptions, KdfParams, OpenMode, Repository, Storage};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Argon2id memory cost in KiB for this password's key file (default 65536 = 64 MiB)
    #[arg(long, value_name = "KIB", default_value_t = KdfParams::DEFAULT.memory_kib)]
    pub argon2_memory_kib: u32,
    /// Argon2id passes (default 3)
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.iterations)]
    pub argon2_iterations: u32,
    /// Argon2id lanes, computed on that many cores at once (default 4)
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.parallelism)]
    pub argon2_lanes: u32,
    /// Accept Argon2id costs below the minimum (19 MiB with 2 passes, or 46 MiB with 1), with a
    /// warning: for tests and benchmarks, never for real passwords
    #[arg(long)]
    pub insecure_kdf: bool,
    /// Target pack size in MiB
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub pack_size_mib: u32,
    /// zstd compression level (1-19)
    #[arg(long, value_name = "LEVEL", default_value_t = 3)]
    pub compression_level: i32,
    /// zstd compression level (1-19) of database dumps' 16 KiB chunks
    #[arg(long, value_name = "LEVEL", default_value_t = coffer_repo::format::config::DEFAULT_DUMP_COMPRESSION_LEVEL)]
    pub dump_compression_level: i32,
    /// Print the new repository's id and location as JSON
    #[arg(long)]
    pub json: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            argon2_memory_kib: KdfParams::DEFAULT.memory_kib,
            argon2_iterations: KdfParams::DEFAULT.iterations,
            argon2_lanes: KdfParams::DEFAULT.parallelism,
            insecure_kdf: false,
            pack_size_mib: 16,
            compression_level: 3,
            dump_compression_level: coffer_repo::format::config::DEFAULT_DUMP_COMPRESSION_LEVEL,
            json: false,
        }
    }
}

/// Refuses Argon2id parameters below the floor for new key files
/// ([`coffer_repo::format::keyfile::kdf_weakness`]) as a usage error, unless `insecure` (then
/// warns). Shared with `key add`.
pub fn check_kdf(kdf: &KdfParams, insecure: bool) -> Result<()> {
    let Some(why) = coffer_repo::format::keyfile::kdf_weakness(kdf) else {
        return Ok(());
    };
    if !insecure {
        return Err(crate::exit::usage(format!(
            "{why}: a stolen key file would give up its password too cheaply; raise \
             --argon2-memory-kib / --argon2-iterations, or pass --insecure-kdf (tests and \
             benchmarks only)"
        )));
    }
    eprintln!("warning: {why}; accepted because of --insecure-kdf (not for real passwords)");
    Ok(())
}

/// Creates the repository; shared with `backup --init`.
pub fn create(ctx: &Context_, args: &Args) -> Result<Repository> {
    let kdf = KdfParams {
        memory_kib: args.argon2_memory_kib,
        iterations: args.argon2_iterations,
        parallelism: args.argon2_lanes,
    };
    check_kdf(&kdf, args.insecure_kdf)?;
    let location = ctx.global.repo()?;
    let options = ctx.global.storage_options(&ctx.global.options);
    let storage = Storage::open_with(location, OpenMode::Create, &options)?;
    let password = crate::password::get(&ctx.global, true)?;
    let options = InitOptions {
        kdf,
        pack_size: args.pack_size_mib.saturating_mul(1024 * 1024),
        compression_level: args.compression_level,
        dump_compression_level: args.dump_compression_level,
        hostname: super::hostname(),
        username: super::username(),
        ..InitOptions::default()
    };
    let repo = Repository::init(storage, &password, &options)?;
    if args.json {
        let value = serde_json::json!({
            "id": repo.config().id,
            "location": repo.storage().location(),
            "key_id": repo.key_id().to_hex(),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else if !ctx.global.quiet {
        outln!(
            "created repository {} at {}",
            repo.config().id,
            repo.storage().location()
        );
        outln!("keep the password safe: without it the data cannot be read, by you or anyone");
    }
    Ok(repo)
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    create(ctx, &args)?;
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_kdf_is_a_usage_error_unless_insecure() {
        let weak = KdfParams {
            memory_kib: 32,
            iterations: 1,
            parallelism: 1,
        };
        let err = check_kdf(&weak, false).unwrap_err();
        assert_eq!(crate::exit::code_for(&err), crate::exit::USAGE);
        assert!(err.to_string().contains("--insecure-kdf"), "{err}");
        assert!(check_kdf(&weak, true).is_ok());
        assert!(check_kdf(&KdfParams::DEFAULT, false).is_ok());
        assert!(!Args::default().insecure_kdf);
    }
}
