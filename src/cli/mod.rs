//! The command line: global options, one file per subcommand, exit codes.

/// `println!` for results on stdout. A closed pipe (`discord-indexer status |
/// head -1`) ends the program quietly, as ripgrep does: the reader has what
/// it wanted, and results are printed only after every write to the stores
/// is committed.
macro_rules! out {
    () => { $crate::cli::write_out(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*)) };
}

/// A line for the person at the terminal (a banner, a note), on stderr
/// unless `--quiet`; control characters from chat are neutralised there.
macro_rules! say {
    ($($arg:tt)*) => { if !$crate::cli::quiet() { $crate::cli::write_err(format_args!($($arg)*)) } };
}

mod activate;
mod adapt;
mod ask;
mod bot;
mod completions;
mod drop_index;
mod guilds;
mod import;
mod index;
mod load;
mod man;
mod models;
mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// Exit codes, for scripts.
pub mod exit {
    /// Everything asked for was done (skipped forbidden/deleted channels included).
    pub const OK: u8 = 0;
    /// The run finished, but some channels or guilds failed; rerun to continue.
    pub const PARTIAL: u8 = 1;
    /// Nothing useful happened: bad input, bad token, unusable store, unreachable service.
    pub const FATAL: u8 = 2;
    /// Stopped by Ctrl-C (or SIGTERM); everything written is consistent.
    pub const INTERRUPTED: u8 = 130;
}

/// The version, with the optional features this binary was built with.
const VERSION: &str = if cfg!(feature = "cuda") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: cuda)")
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (features: none; embedding on the CPU only, build with --features cuda for NVIDIA GPUs)"
    )
};

/// The heading of the options every command takes, apart from its own.
const GLOBAL: &str = "Global options";

/// Archive Discord servers into SQLite and make them searchable.
#[derive(Debug, Parser)]
#[command(name = "discord-indexer", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./discord-indexer.toml if present).
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Where the archive and indexes live (default: data/).
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub data_dir: Option<PathBuf>,
    /// Where embedding models are (else DISCORD_INDEXER_MODELS_DIR, else [index] models_dir, else
    /// ./models if it exists, else discord-indexer/models in the user's data directory: ~/.local/share on Linux).
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub models_dir: Option<PathBuf>,
    /// Print results as JSON on stdout (progress and errors go to stderr).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// More log output on stderr (-v, -vv); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only results and errors: no progress display, banners or notes on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage one: load guild history into the archive (resumable).
    Load(load::Args),
    /// Import DiscordChatExporter exports (JSON, CSV) into the archive.
    Import(import::Args),
    /// What the archive holds, per guild and channel, and its indexes.
    Status(status::Args),
    /// Stage two: chunk, embed and store a guild's history for search.
    Index(index::Args),
    /// The models installed in the models directory: embedding models, and chat models (GGUF) that write answers.
    Models(models::Args),
    /// Fine-tune a copy of a model on a guild's own conversations, as a new model.
    Adapt(adapt::Args),
    /// Search indexed guilds: hybrid (vector + keyword), as the operator or as a user.
    Ask(ask::Args),
    /// Run the Discord bot: slash commands, DM /ask, live capture.
    Bot(bot::Args),
    /// Make a complete index the one search uses for a guild.
    Activate(activate::Args),
    /// Delete a guild's collection for a model.
    DropIndex(drop_index::Args),
    /// The guilds in the archive (for scripts: --json).
    Guilds(guilds::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Print the manual page, or write one per subcommand with --dir.
    Man(man::Args),
}

/// Names one index: a guild and a model.
#[derive(Debug, clap::Args)]
pub struct IndexRef {
    /// Guild id.
    #[arg(long, value_name = "ID", value_parser = discord_id)]
    pub guild: u64,
    /// Model name (a directory under models/).
    #[arg(long)]
    pub model: String,
}

/// Parses a Discord id (guild, channel, user) given on the command line.
fn discord_id(text: &str) -> Result<u64, String> {
    crate::snowflake::parse(text.trim()).ok_or_else(|| {
        "not a Discord id: ids are numbers like 123456789012345678 (in Discord, turn on Developer Mode, \
         then right-click a server, channel or user and choose Copy ID; `discord-indexer guilds` lists the archive's)"
            .to_owned()
    })
}

/// A progress bar on stderr when it is a terminal (hidden otherwise), with
/// `template` and a steady tick; `len` None for a spinner without a total.
fn progress_bar(len: Option<u64>, template: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget};
    use std::io::IsTerminal;
    let target = if std::io::stderr().is_terminal() && !quiet() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(len, target);
    bar.set_style(bar_style(template));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The look of [`progress_bar`]s: `template`, with `{rate}` in whole units.
fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
        // indicatif's {per_sec} prints four decimals.
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        })
}

/// Set once from `--quiet`, before a subcommand runs.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// `--json`: results are JSON, written exactly.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// "1 channel", "2 channels".
pub(crate) fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Whether stderr should carry only errors (`--quiet`).
fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// An error and its causes on one line, each said once: many messages
/// already embed their cause's text, which the chain would repeat.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Writes one line of results to stdout (see `out!`). On a terminal, control
/// characters in it (from channel names, author names, message text, which
/// Discord and exports pass through as they are) are shown, not obeyed; JSON
/// and output into a pipe or file stay exact.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::{IsTerminal, Write};
    let mut stdout = std::io::stdout().lock();
    let line = args.to_string();
    let line = if stdout.is_terminal() && !JSON.load(std::sync::atomic::Ordering::Relaxed) {
        terminal_safe(&line)
    } else {
        std::borrow::Cow::Borrowed(line.as_str())
    };
    if let Err(e) = stdout.write_all(line.as_bytes()).and_then(|()| stdout.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(exit::OK as i32);
        }
        eprintln!("error: cannot write the results to stdout: {e}");
        std::process::exit(exit::FATAL as i32);
    }
}

/// Writes one line to stderr, neutralised on a terminal as [`write_out`] does.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    use std::io::{IsTerminal, Write};
    let line = args.to_string();
    let mut stderr = std::io::stderr().lock();
    let line = if stderr.is_terminal() { terminal_safe(&line) } else { std::borrow::Cow::Borrowed(line.as_str()) };
    let _ = stderr.write_all(line.as_bytes()).and_then(|()| stderr.write_all(b"\n"));
}

/// `text` with what a terminal would obey rather than show made visible:
/// C0 controls but newline and tab (escape sequences start with ESC), DEL,
/// C1 controls, and the bidirectional overrides that reorder what is shown.
/// Each becomes `\u{..}` (as ripgrep and git show such bytes, in Rust's
/// notation).
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Logs go to stderr; `-v` raises the level, `RUST_LOG` overrides it.
pub fn init_logging(verbose: u8, quiet: bool) {
    // qdrant-edge warns about internal start-up checks that do not concern users.
    let default = match verbose {
        0 if quiet => "error",
        0 => "warn,qdrant_edge=error",
        1 => "info,discord_indexer=debug,qdrant_edge=error",
        _ => "debug",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    // Interaction tokens must not reach the log: serenity's HTTP spans record
    // each request's route (events inside them, from hyper, would print it),
    // its debug spans record gateway payloads, and tungstenite traces frames.
    // (Capped, not raised: at the default level they stay at warn.)
    let cap = if verbose == 0 { "warn" } else { "info" };
    for directive in [
        format!("serenity={cap}"),
        "serenity::http=warn".to_owned(),
        format!("tungstenite={cap}"),
        format!("tokio_tungstenite={cap}"),
    ] {
        filter = filter.add_directive(directive.parse().expect("valid directive"));
    }
    // Colours only on a terminal, and never with NO_COLOR set (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        // Its own write errors (stderr closed) would go to eprintln!, which
        // panics on a closed stderr: a log line must never end the program.
        .log_internal_errors(false)
        .try_init();
}

/// Runs the chosen subcommand and returns its exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    JSON.store(cli.json, std::sync::atomic::Ordering::Relaxed);
    // Needs no settings: works before any configuration exists. Options that
    // mean nothing there are refused rather than silently ignored.
    if matches!(cli.command, Command::Completions(_) | Command::Man(_)) {
        let meaningless = [
            (cli.json, "--json"),
            (cli.data_dir.is_some(), "--data-dir"),
            (cli.models_dir.is_some(), "--models-dir"),
            (cli.config.is_some(), "--config"),
        ];
        if let Some((_, flag)) = meaningless.iter().find(|(given, _)| *given) {
            anyhow::bail!("{flag} means nothing for `completions` and `man`: they print text that needs no archive");
        }
    }
    if matches!(cli.command, Command::Bot(_)) && cli.json {
        anyhow::bail!("--json means nothing for `bot`: it runs until stopped and reports in Discord and its log");
    }
    let cli = match cli.command {
        Command::Completions(args) => return completions::run(args),
        Command::Man(args) => return man::run(args),
        _ => cli,
    };
    let settings = Settings::resolve(cli.config.as_deref(), cli.data_dir.clone(), cli.models_dir.clone())?;
    settings.index.init_threads()?;
    match cli.command {
        Command::Load(args) => load::run(args, &settings, cli.json, cli.verbose > 0).await,
        Command::Import(args) => import::run(args, &settings, cli.json).await,
        Command::Status(args) => status::run(args, &settings, cli.json).await,
        Command::Index(args) => index::run(args, &settings, cli.json).await,
        Command::Models(args) => models::run(args, &settings, cli.json),
        Command::Adapt(args) => adapt::run(args, &settings, cli.json).await,
        Command::Ask(args) => ask::run(args, &settings, cli.json).await,
        Command::Bot(args) => bot::run(args, &settings).await,
        Command::Activate(args) => activate::run(args, &settings, cli.json).await,
        Command::DropIndex(args) => drop_index::run(args, &settings, cli.json).await,
        Command::Guilds(args) => guilds::run(args, &settings, cli.json),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// A token cancelled by the first Ctrl-C or SIGTERM, which answers with
/// `notice`; a second Ctrl-C exits at once (safe too: every write is a whole
/// transaction). The same signal ends every Discord rate-limit wait and
/// retry pause of the process ([`crate::discord::stop_waiting`]): a wait is
/// not work in flight, and one of minutes (or one a damaged shared file asks
/// for) must not outlast the stop.
pub fn shutdown_on_signal(notice: &'static str) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        // Not `eprintln!`: with stderr closed (a reader gone) it would panic
        // here, and the stop would never be passed on.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("\n{notice}\n").as_bytes());
        // The run's token first: a loop that races a request against it
        // then stops as planned rather than on the request's error.
        t.cancel();
        crate::discord::stop_waiting();
        wait_for_signal().await;
        std::process::exit(exit::INTERRUPTED as i32);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("no model \"x\" in models: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    #[test]
    fn what_a_terminal_would_obey_is_shown_instead() {
        use super::terminal_safe;
        assert_eq!(
            terminal_safe("plain\ttext\nnext line, caf\u{e9} \u{1f600}"),
            "plain\ttext\nnext line, caf\u{e9} \u{1f600}"
        );
        assert_eq!(terminal_safe("\x1b]0;owned\x07#general\x1b[2J"), "\\u{1b}]0;owned\\u{7}#general\\u{1b}[2J");
        assert_eq!(terminal_safe("a\rb\u{9b}c\u{7f}"), "a\\u{d}b\\u{9b}c\\u{7f}");
        assert_eq!(terminal_safe("evil\u{202e}gnp.exe"), "evil\\u{202e}gnp.exe");
    }

    #[test]
    fn ids_are_explained_when_they_are_not_numbers() {
        assert_eq!(super::discord_id("123456789012345678"), Ok(123456789012345678));
        assert!(super::discord_id("abc").unwrap_err().contains("Copy ID"));
        assert!(super::discord_id("-5").is_err() && super::discord_id("0").is_err());
    }

    #[test]
    fn each_cause_is_said_once() {
        let e = anyhow::Error::new(Embeds { source: std::io::Error::other("not found") }).context("index failed");
        assert_eq!(super::error_text(&e), "index failed: no model \"x\" in models: not found");
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("writing the archive");
        assert_eq!(super::error_text(&e), "writing the archive: disk full");
    }
}
