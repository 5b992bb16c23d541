//! `discord-indexer import`: DiscordChatExporter exports into the archive,
//! with a progress bar on a terminal and a summary at the end.

use std::path::PathBuf;

use super::{exit, shutdown_on_signal};
use crate::config::Settings;
use crate::import::{self, Format, ImportEvent, ImportOptions, ImportSummary};
use crate::store::Store;

/// Import DiscordChatExporter exports (JSON or CSV) into the archive.
///
/// Imported channels become searchable through `index` and `ask` like loaded
/// ones, and `load` continues each JSON-imported channel after its newest
/// imported message. Re-importing changes nothing; a longer export adds only
/// what is new. Exit codes: 0 all imported (rejected rows are listed, not
/// failures), 1 some files failed, 2 nothing could be imported, 130
/// interrupted (rerun to finish).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Export files (.json, .csv) or folders searched recursively for them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The guild (server) name for CSV exports, which name none
    /// (default: from DCE's file names, else the folder holding the channel).
    #[arg(long, value_name = "NAME")]
    pub guild_name: Option<String>,
    /// Messages per transaction (tests use small batches).
    #[arg(long, hide = true, default_value_t = import::DEFAULT_BATCH)]
    pub batch_size: usize,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let store = Store::open(&settings.data_dir)?;
    // The files an export carries (DCE `--media`) are kept as a load keeps
    // downloads: `[load] attachments` and its caps.
    let media = Some(settings.load.files.clone());
    let options = ImportOptions { paths: args.paths, guild_name: args.guild_name, batch: args.batch_size, media };
    let shutdown = shutdown_on_signal("stopping: finishing the batch in flight (Ctrl-C again to quit at once)");
    let summary = crate::blocking::run(move || {
        let bar = super::progress_bar(
            Some(0),
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})  {msg}",
        );
        let on_event = |e: ImportEvent| match e {
            ImportEvent::Started { bytes, .. } => bar.set_length(bytes),
            ImportEvent::Progress { bytes, messages } => {
                bar.set_position(bytes);
                bar.set_message(format!("{messages} messages"));
            }
        };
        let summary = import::import(&store, &options, &on_event, &shutdown);
        bar.finish_and_clear();
        summary
    })
    .await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    let failed_all = summary.failed > 0 && summary.failed == summary.sources.len();
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if failed_all {
        exit::FATAL
    } else if summary.failed > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

fn print_summary(s: &ImportSummary) {
    for src in &s.sources {
        let file = src.files.first().map(|f| f.display().to_string()).unwrap_or_default();
        let more = if src.files.len() > 1 { format!(" (+{} parts)", src.files.len() - 1) } else { String::new() };
        let what = match (&src.guild, &src.channel) {
            (Some(g), Some(c)) => format!("{g} / #{c}"),
            _ => file.clone(),
        };
        let kind = match src.format {
            Format::Json => "json",
            Format::Csv => "csv",
        };
        match &src.error {
            Some(e) => out!("FAILED {kind} {what}{more}: {e}"),
            None => out!(
                "  {kind} {what}{more}: {} new, {} updated, {} already present{}",
                src.new,
                src.updated,
                src.unchanged,
                if src.rejected > 0 { format!(", {} rows rejected", src.rejected) } else { String::new() }
            ),
        }
        if src.error.is_some() && src.new + src.updated > 0 {
            out!("    ({} messages read before the error are stored)", src.new + src.updated);
        }
        for r in &src.rejected_rows {
            out!("    rejected {} at {}: {}", r.file.display(), r.at, r.reason);
        }
        if src.rejected > src.rejected_rows.len() as u64 {
            out!("    ... and {} more rejected rows", src.rejected - src.rejected_rows.len() as u64);
        }
        if src.media_stored + src.media_not_stored > 0 {
            out!(
                "    attachment files from the export's media folder: {} stored, {} not",
                src.media_stored,
                src.media_not_stored
            );
        }
        for why in &src.media_problems {
            out!("    not stored: {why}");
        }
    }
    let rate = (s.new + s.updated + s.unchanged) as f64 / s.seconds.max(0.001);
    out!(
        "{}, {}: {} new, {} updated, {} already present messages; {} rows rejected; {:.1}s ({:.0} messages/s){}{}",
        super::plural(s.files as u64, "file"),
        super::plural(s.channels as u64, "channel"),
        s.new,
        s.updated,
        s.unchanged,
        s.rejected,
        s.seconds,
        rate,
        if s.failed > 0 { format!("; {} failed", s.failed) } else { String::new() },
        if s.interrupted { "; interrupted: rerun to finish" } else { "" },
    );
}
