//! `discord-indexer man`: manual pages, generated from the same definitions
//! as `--help`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::exit;

/// Print the manual page (roff), or write one page per subcommand to a directory.
///
/// `discord-indexer man --dir ~/.local/share/man/man1`, then `man discord-indexer`
/// or `man discord-indexer-load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write discord-indexer.1 and a page per subcommand (discord-indexer-load.1, …) here.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let command = super::Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write manual pages to {}", dir.display()))?;
            say!("manual pages written to {}", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page).context("cannot render the manual page")?;
            out!("{}", String::from_utf8_lossy(&page).trim_end());
        }
    }
    Ok(exit::OK)
}
