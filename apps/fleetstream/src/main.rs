//! The `fleetstream` binary: parse, run, map errors to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fleetstream::cli::Cli::parse();
    fleetstream_obs::init_logging(cli.log_json);
    match fleetstream::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(fleetstream::exit_code(&e))
        }
    }
}
