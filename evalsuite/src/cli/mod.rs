//! Argument parsing and dispatch for the `tunelab` command.

mod generate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tunelab: fine-tune LoRA adapters and find out, honestly, whether they got better.
#[derive(Debug, Parser)]
#[command(name = "tunelab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a reply to one prompt with a model (and optionally a LoRA adapter).
    Generate(generate::GenerateArgs),
}

/// Parses the command line, runs the command, and turns errors into a message and exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
