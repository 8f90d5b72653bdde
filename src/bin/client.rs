//! `client`: parse flags, start logging, run one command, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use ringleader::cli::{self, process, ClientArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ClientArgs::parse();
    process::init_tracing("warn");
    ExitCode::from(cli::run(args).await)
}
