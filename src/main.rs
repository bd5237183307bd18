//! The `kktcert` binary: parses the command line and dispatches to the
//! subcommand modules under `cli/`. Errors are one line on stderr and exit
//! status 2.

mod cli;

use clap::error::ErrorKind;
use clap::Parser;

/// clap's usage error as one line: its message and any hint (the possible
/// values, a suggestion), without the usage block.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let kept = text.lines().map(str::trim).filter(|l| {
        !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
    });
    let mut out = String::new();
    for l in kept {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(l);
    }
    out
}

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                    | ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", one_line(&e));
            std::process::exit(2);
        }
    };
    if let Err(e) = cli.run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
