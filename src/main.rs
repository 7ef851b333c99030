//! `novapay` command line: parses flags (with environment and `.env` fallbacks) and calls the library.

use clap::Parser;

mod cli;
mod commands;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // .env first, so that its variables feed clap's `env` fallbacks. Only the working directory's
    // .env (or --env-file): a .env in a parent directory may belong to someone else.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match cli::env_file_arg(&args) {
        Some(path) => {
            if let Err(e) = dotenvy::from_path(&path) {
                eprintln!("error: cannot read --env-file {}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
        }
        None => match dotenvy::from_path(".env") {
            Ok(()) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                eprintln!("error: cannot read ./.env: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    }
    let cli = cli::Cli::parse_from(args);
    cli::init_logging(&cli.log_format);
    match commands::run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
