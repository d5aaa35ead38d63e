//! `moebench doctor`: what this machine gives moebench (libtorch, CUDA, cache, data, sandbox).
use crate::common::HubArgs;
use anyhow::Result;
use moebench_runner::doctor::{diagnose, Status};

#[derive(clap::Args)]
pub struct Args {
    /// Print the checks as JSON (`[{name, status, detail}]`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hub: HubArgs,
}

/// Exit 1 when something is missing, so scripts can gate on it.
pub fn run(args: Args) -> Result<crate::ExitCode> {
    let checks = diagnose(&args.hub.config()?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        println!("moebench {}", env!("CARGO_PKG_VERSION"));
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok     ",
                Status::Warn => "warn   ",
                Status::Missing => "MISSING",
            };
            println!("{mark} {:<16} {}", c.name, c.detail);
        }
    }
    Ok(match checks.iter().any(|c| c.status == Status::Missing) {
        true => crate::ExitCode::Error,
        false => crate::ExitCode::Ok,
    })
}
