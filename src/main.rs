//! The `kktcert` binary: parses the command line and dispatches to the
//! subcommand modules under `cli/`. Errors are one line on stderr and exit
//! status 2.

mod cli;

use clap::Parser;

fn main() {
    if let Err(e) = cli::Cli::parse().run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
