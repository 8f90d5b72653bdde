//! `client`: parse flags, start logging, run one command, exit with its code.

use std::process::ExitCode;

use ringleader::cli::{self, process, ClientArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ClientArgs::from_command_line();
    // View-leader members and servers run in this process only in the demo, which kills and
    // starts them on purpose and tells what happens in its own words: their logs of heartbeats
    // and Raft messages to a dead member would bury that story. RUST_LOG brings them back.
    process::init_tracing(
        "warn,openraft=off,ringleader::server=error,ringleader::viewleader=error",
    );
    ExitCode::from(cli::run(args).await)
}
