//! `discord-indexer man`: manual pages, generated from the same definitions
//! as `--help`, with the sections a manual page is expected to have (EXIT
//! STATUS, ENVIRONMENT, EXAMPLES) written here once for every page.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_mangen::roff::{bold, roman, Roff};

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
    // The footer names the program and its version; the long version text
    // (which features were built in) belongs to --version, not there.
    let mut command = super::Cli::command().version(env!("CARGO_PKG_VERSION")).disable_help_subcommand(true);
    command.build();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            write_pages(&command, &dir).with_context(|| format!("cannot write manual pages to {}", dir.display()))?;
            say!("manual pages written to {}", dir.display());
        }
        None => out!("{}", String::from_utf8_lossy(&page(&command)?).trim_end()),
    }
    Ok(exit::OK)
}

/// Writes the page of `command` and of each subcommand (`discord-indexer-load.1`, …).
fn write_pages(command: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let name = command.get_display_name().unwrap_or_else(|| command.get_name());
    std::fs::write(dir.join(format!("{name}.1")), page(command)?)
}

/// One manual page in roff.
fn page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    let version = env!("CARGO_PKG_VERSION");
    let man = clap_mangen::Man::new(command.clone())
        .source(format!("discord-indexer {version}"))
        .manual("discord-indexer manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if command.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    extra_sections().to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// EXIT STATUS, ENVIRONMENT and EXAMPLES, the same on every page.
fn extra_sections() -> Roff {
    let mut roff = Roff::default();
    let item = |roff: &mut Roff, term: &str, text: &str| {
        roff.control("TP", []).text([bold(term)]).text([roman(text)]);
    };
    roff.control("SH", ["EXIT STATUS"]);
    for (code, text) in [
        (exit::OK, "Everything asked for was done (channels the bot may not read are skipped, not failures)."),
        (exit::PARTIAL, "The run finished, but some channels, guilds or files failed: rerun to continue."),
        (
            exit::FATAL,
            "Nothing useful happened: bad input, a refused token, an unusable store, an unreachable service.",
        ),
        (exit::INTERRUPTED, "Stopped by Ctrl-C or SIGTERM; everything written is consistent: rerun to continue."),
    ] {
        item(&mut roff, &code.to_string(), text);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, text) in [
        ("DISCORD_TOKEN", "The bot's token (load, bot, and ask --as-user). Never logged."),
        ("DISCORD_API_BASE", "Another Discord API base URL (a test server)."),
        ("DISCORD_INDEXER_DATA_DIR", "Where the archive and indexes live (as --data-dir)."),
        ("DISCORD_INDEXER_MODELS_DIR", "Where embedding models are (as --models-dir)."),
        ("QDRANT_URL, QDRANT_API_KEY", "A Qdrant server or cluster instead of the embedded store."),
        ("RUST_LOG", "Log filter (overrides -v and -q)."),
        ("NO_COLOR", "No colours in the log."),
    ] {
        item(&mut roff, name, text);
    }
    roff.control("SH", ["EXAMPLES"]);
    for (line, text) in [
        ("DISCORD_TOKEN=... discord-indexer load --guild 123456789012345678", "Archive a server's history."),
        ("discord-indexer import exports/", "Import DiscordChatExporter exports instead, or as well."),
        ("discord-indexer index --guild 123456789012345678", "Make it searchable."),
        ("discord-indexer ask \"how do I rotate the keys\"", "Search it, as the operator."),
        ("discord-indexer status --json", "What the archive and its indexes hold, for scripts."),
    ] {
        roff.control("TP", []).text([bold(line)]).text([roman(text)]);
    }
    roff
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_page_has_its_sections_and_a_plain_footer() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = <super::super::Cli as clap::CommandFactory>::command()
            .version(env!("CARGO_PKG_VERSION"))
            .disable_help_subcommand(true);
        command.build();
        super::write_pages(&command, dir.path()).unwrap();
        let load = std::fs::read_to_string(dir.path().join("discord-indexer-load.1")).unwrap();
        for section in ["EXIT STATUS", "ENVIRONMENT", "EXAMPLES", "DISCORD_TOKEN"] {
            assert!(load.contains(section), "{section} missing");
        }
        let title = load.lines().find(|l| l.starts_with(".TH")).unwrap();
        assert!(title.contains(&format!("\"discord-indexer {}\"", env!("CARGO_PKG_VERSION"))), "{title}");
        assert!(!title.contains("features"), "{title}");
    }
}
