//! `coffer`: encrypted, deduplicated backups of databases, files and secrets.
//!
//! `main` parses the command line, runs one command, and maps the outcome to a documented exit
//! code. Everything else lives in `commands/`.

#[macro_use]
mod output;
mod anomaly;
mod commands;
mod config;
mod escape;
mod exit;
mod global;
mod hooks;
mod mail;
mod memory;
mod notify;
mod notify_body;
mod password;
mod progress;
mod runlock;

use clap::Parser;

use std::process::ExitCode;

fn main() -> ExitCode {
    memory::tune_allocator();
    let cli = match global::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    output::init_tracing(cli.global.verbose);
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second signal while the first is being handled ends the process at once.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        });
    }
    match commands::run(cli, cancel) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if exit::is_broken_pipe(&e) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("coffer: {}", exit::describe(&e));
            ExitCode::from(exit::code_for(&e))
        }
    }
}
