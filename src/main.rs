//! `novapay` command line: parses flags (with environment and `.env` fallbacks) and calls the library.

use clap::Parser;

mod cli;
mod commands;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // .env first, so that its variables feed clap's `env` fallbacks; a missing .env is fine.
    let _ = dotenvy::dotenv();
    let cli = cli::Cli::parse();
    cli::init_logging(&cli.log_format);
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
