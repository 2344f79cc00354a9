//! `vmm-agent`: sends hints about application files to the VMM host. See the
//! library docs (`vmm_agent`) for what it sends and when, and for building it
//! as a static binary:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p vmm-agent --target x86_64-unknown-linux-gnu`.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use vmm_agent::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first paragraph, without tips and usage.
            let text = e.render().to_string();
            let para: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let line = para.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("vmm-agent: error: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    match vmm_agent::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm-agent: error: {e}");
            ExitCode::from(1)
        }
    }
}
