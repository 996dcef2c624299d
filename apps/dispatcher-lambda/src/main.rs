//! `bootstrap`: the fleetstream dispatcher as an AWS Lambda function. Thin: set up logs, build
//! the dispatcher from the environment, hand the handler to the Lambda runtime.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    fleetstream_dispatcher_lambda::init_logging();
    match fleetstream_dispatcher_lambda::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "dispatcher lambda stopped");
            ExitCode::FAILURE
        }
    }
}
