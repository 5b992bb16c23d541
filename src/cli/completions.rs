//! `discord-indexer completions SHELL`: the shell completion script, on stdout.

use clap::CommandFactory as _;

use super::exit;

/// Print a shell completion script: subcommands, flags and their values.
///
/// bash: `discord-indexer completions bash > ~/.local/share/bash-completion/completions/discord-indexer`;
/// zsh: into a directory on `$fpath` as `_discord-indexer`;
/// fish: `discord-indexer completions fish > ~/.config/fish/completions/discord-indexer.fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut command = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "discord-indexer", &mut script);
    out!("{}", String::from_utf8_lossy(&script).trim_end());
    Ok(exit::OK)
}
