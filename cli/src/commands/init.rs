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
    /// Target pack size in MiB
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub pack_size_mib: u32,
    /// zstd compression level (1-19)
    #[arg(long, value_name = "LEVEL", default_value_t = 3)]
    pub compression_level: i32,
    /// zstd compression level (1-19) of database dumps' 16 KiB chunks
    #[arg(long, value_name = "LEVEL", default_value_t = coffer_repo::format::config::DEFAULT_DUMP_COMPRESSION_LEVEL)]
    pub dump_compression_level: i32,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            argon2_memory_kib: KdfParams::DEFAULT.memory_kib,
            argon2_iterations: KdfParams::DEFAULT.iterations,
            argon2_lanes: KdfParams::DEFAULT.parallelism,
            pack_size_mib: 16,
            compression_level: 3,
            dump_compression_level: coffer_repo::format::config::DEFAULT_DUMP_COMPRESSION_LEVEL,
        }
    }
}

/// Creates the repository; shared with `backup --init`.
pub fn create(ctx: &Context_, args: &Args) -> Result<Repository> {
    let location = ctx.global.repo()?;
    let options = ctx.global.storage_options(&ctx.global.options);
    let storage = Storage::open_with(location, OpenMode::Create, &options)?;
    let password = crate::password::get(&ctx.global, true)?;
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: args.argon2_memory_kib,
            iterations: args.argon2_iterations,
            parallelism: args.argon2_lanes,
        },
        pack_size: args.pack_size_mib.saturating_mul(1024 * 1024),
        compression_level: args.compression_level,
        dump_compression_level: args.dump_compression_level,
        hostname: super::hostname(),
        username: super::username(),
        ..InitOptions::default()
    };
    let repo = Repository::init(storage, &password, &options)?;
    if !ctx.global.quiet {
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
