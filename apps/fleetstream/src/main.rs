//! The `fleetstream` binary: parse, run, map errors to an exit code.

/// mimalloc for Rust and, through its `override` feature, for librdkafka's C allocations too
/// (docs/BENCHMARKS.md, "Producer": glibc malloc was the largest cost of sending with headers).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = fleetstream::cli::Cli::try_parse_with_negative_values(std::env::args_os())
        .unwrap_or_else(|e| e.exit());
    fleetstream_obs::init_logging(cli.log_json);
    match fleetstream::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(fleetstream::exit_code(&e))
        }
    }
}
