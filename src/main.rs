use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "waylume-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify the flows of a capture file (pcap or pcapng) and print one line per flow.
    Inspect {
        /// The capture file.
        #[arg(long)]
        pcap: PathBuf,
        /// One JSON object per flow per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { pcap, json } => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            match waylume::inspect::run(&pcap, json, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("waylume-server: {e}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}
