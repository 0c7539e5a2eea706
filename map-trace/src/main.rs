use std::process::ExitCode;

use clap::Parser as _;
use map_trace::{check, cli, compare, session};

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let result = match args.command {
        Some(cli::Command::Hash(hash)) => {
            println!("{:016x}", hash.hash());
            Ok(())
        }
        Some(cli::Command::Compare(args)) => match compare::run(&args) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Some(cli::Command::Check(args)) => check::run(&args),
        None => session::run(
            &args
                .trace
                .into_options()
                .unwrap_or_else(|usage| usage.exit()),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, whatever the chain of causes: scripts read the first line only.
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
