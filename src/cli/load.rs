//! `discord-indexer load`: stage one from the command line, with a live
//! progress bar on a terminal and a per-channel summary at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use indicatif::ProgressBar;

use super::{exit, shutdown_on_signal};
use crate::config::Settings;
use crate::discord::Client;
use crate::load::files::{AttachmentMode, FileSummary};
use crate::load::{self, ChannelReport, LoadEvent, LoadOptions, LoadSummary, Outcome};
use crate::store::Store;

/// Load the full history of guilds (or some channels) into the archive.
///
/// Needs the bot's token in DISCORD_TOKEN (or `token` in the config file);
/// DISCORD_API_BASE points it at another API base (a test server).
/// Reruns continue where the last run stopped. Exit codes: 0 all done
/// (forbidden or deleted channels are skipped, not failures), 1 some channels
/// or guilds failed (rerun to continue), 2 fatal error or no guild could be
/// listed (unknown ids), 130 interrupted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guild (server) id to load; repeat for several.
    #[arg(long = "guild", value_name = "ID", value_parser = super::discord_id)]
    pub guilds: Vec<u64>,
    /// Only this channel or thread id; repeat for several.
    #[arg(long = "channel", value_name = "ID", value_parser = super::discord_id)]
    pub channels: Vec<u64>,
    /// Channels loaded at the same time (default 8, or [load] concurrency).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Attachment files to fetch after the messages: none, images or all
    /// (default images, or [load] attachments). Stored under
    /// <data-dir>/attachments/, named by their SHA-256.
    #[arg(long, value_name = "WHICH")]
    pub attachments: Option<crate::load::files::AttachmentMode>,
}

/// `verbose` (-v): list up-to-date channels one by one too.
pub async fn run(args: Args, settings: &Settings, json: bool, verbose: bool) -> anyhow::Result<u8> {
    if args.guilds.is_empty() && args.channels.is_empty() {
        anyhow::bail!("nothing to load: give at least one --guild ID or --channel ID");
    }
    let token = settings.require_token()?;
    let store = Store::open(&settings.data_dir)?;
    let client = settings.client(token)?;
    let options = LoadOptions {
        guilds: args.guilds,
        channels: args.channels,
        concurrency: args.concurrency.unwrap_or(settings.load.concurrency).max(1),
    };
    let shutdown = shutdown_on_signal("stopping: finishing the pages in flight (Ctrl-C again to quit at once)");
    let view = ProgressView::new(client.clone());
    let ticker = {
        let view = view.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                view.refresh();
            }
        })
    };
    let summary = load::load(&client, &store, &options, &|e| view.on_event(e), &shutdown).await;
    ticker.abort();
    view.finish();
    let mut summary = match summary {
        Ok(summary) => summary,
        // A stop that cut a wait before any channel started (the token
        // check, the guild listing): nothing was half done.
        Err(load::LoadError::Api(e @ crate::discord::ApiError::Stopped)) if shutdown.is_cancelled() => {
            say!("interrupted ({e}) before anything was loaded: rerun the same command");
            return Ok(exit::INTERRUPTED);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("load failed")),
    };
    let mut file_options = settings.load.files.clone();
    if let Some(mode) = args.attachments {
        file_options.mode = mode;
    }
    if !summary.interrupted && file_options.mode != AttachmentMode::None {
        let bar = super::progress_bar(
            Some(0),
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} attachment files",
        );
        let on_files = |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        };
        load::fetch_files(&client, &store, &mut summary, &file_options, &on_files, &shutdown)
            .await
            .context("fetching attachment files failed")?;
        bar.finish_and_clear();
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, verbose);
    }
    // Not one guild could be listed (unknown ids, or guilds without the bot):
    // nothing was done, so it is bad input rather than a partial run.
    let nothing =
        !summary.guilds.is_empty() && summary.guilds.iter().all(|g| g.error.is_some()) && summary.channels.is_empty();
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if nothing {
        exit::FATAL
    } else if summary.ok {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// The terminal view of a run: a progress bar on stderr when it is a terminal.
/// It counts thousandths of channels, so that a long channel moves the bar
/// as its pages land (how far through its history, by time), not only when
/// it is done.
struct ProgressView {
    bar: ProgressBar,
    client: Client,
    started: Instant,
    messages: AtomicU64,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    channels: u64,
    done: u64,
    /// Channels under way: thousandths done so far.
    partial: HashMap<u64, u64>,
}

/// Bar units per channel.
const PER_CHANNEL: u64 = 1000;

impl ProgressView {
    fn new(client: Client) -> Arc<Self> {
        // Length 1 until the channels are known (0 would draw a full bar).
        let bar = super::progress_bar(Some(1), "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {percent:>3}%  {msg}");
        Arc::new(ProgressView {
            bar,
            client,
            started: Instant::now(),
            messages: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
        })
    }

    fn on_event(&self, event: LoadEvent) {
        let mut c = self.counts.lock().unwrap();
        match event {
            LoadEvent::Discovered { guild, channels, skipped, .. } => {
                c.channels += (channels + skipped) as u64;
                self.bar.set_length(c.channels * PER_CHANNEL);
                if skipped > 0 {
                    self.bar.println(format!("{guild}: {channels} channels to load, {skipped} the bot may not read"));
                }
            }
            LoadEvent::Page { channel_id, new, updated, last_message_id, from, newest } => {
                self.messages.fetch_add(new + updated, Ordering::Relaxed);
                let fraction = load::channel_fraction(from, last_message_id, newest);
                c.partial.insert(channel_id, ((fraction * PER_CHANNEL as f64) as u64).min(PER_CHANNEL - 1));
            }
            LoadEvent::ChannelDone(r) => {
                c.done += 1;
                c.partial.remove(&r.channel_id);
                if !r.outcome.is_ok() && r.outcome != Outcome::Interrupted {
                    self.bar.println(format!("#{} ({}): {}", r.name, r.channel_id, describe(&r)));
                }
            }
        }
        self.bar.set_position(c.done * PER_CHANNEL + c.partial.values().sum::<u64>());
        drop(c);
        self.refresh();
    }

    /// Redraws the message line (also every half second, so waits and
    /// retries show while nothing else happens).
    fn refresh(&self) {
        let c = self.counts.lock().unwrap();
        let n = self.messages.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let stats = self.client.stats();
        let mut waiting =
            if stats.waiting > 0 { format!(", {} waiting on rate limits", stats.waiting) } else { String::new() };
        if stats.retrying > 0 {
            waiting.push_str(&format!(", {} retrying after errors (see the log)", stats.retrying));
        }
        self.bar.set_message(format!(
            "{}/{} channels ({} under way), {n} messages, {:.0}/s{waiting}",
            c.done,
            c.channels,
            c.partial.len(),
            n as f64 / secs
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// How one channel's load ended, in words.
fn describe(c: &ChannelReport) -> String {
    match c.outcome {
        Outcome::Complete => format!("{} new, {} updated, {} already present", c.new, c.updated, c.already_present),
        Outcome::UpToDate => "up to date".to_owned(),
        Outcome::Forbidden => {
            let reason = c.reason.as_deref().unwrap_or("");
            format!("skipped, forbidden: {}", reason.strip_prefix("forbidden: ").unwrap_or(reason))
        }
        Outcome::Gone => "skipped, channel no longer exists".to_owned(),
        Outcome::Failed => format!(
            "FAILED ({} new so far; rerun to continue): {}",
            c.new,
            c.reason.as_deref().unwrap_or("unknown error")
        ),
        Outcome::Interrupted => format!("interrupted ({} new so far; rerun to continue)", c.new),
    }
}

/// A line per channel that changed or needs attention; up-to-date channels
/// are counted in one line (listed with -v, and always in --json).
fn print_summary(s: &LoadSummary, verbose: bool) {
    for g in &s.guilds {
        let name = g.name.as_deref().unwrap_or("?");
        match &g.error {
            Some(e) => out!("guild {} ({name}): FAILED: {e}", g.guild_id),
            None => out!("guild {} ({name})", g.guild_id),
        }
        if !super::quiet() {
            for note in &g.notes {
                out!("  note: {note}");
            }
        }
        let channels = s.channels.iter().filter(|c| c.guild_id == g.guild_id);
        let up_to_date = channels.clone().filter(|c| matches!(c.outcome, Outcome::UpToDate)).count();
        for c in channels.filter(|c| verbose || !matches!(c.outcome, Outcome::UpToDate)) {
            out!("  #{:<24} {:<15} {}", c.name, c.kind, describe(c));
        }
        if up_to_date > 0 && !verbose {
            out!("  {} up to date (list them with -v)", super::plural(up_to_date as u64, "channel"));
        }
    }
    if let Some(f) = &s.files {
        print_files(f);
    }
    let failed = s.channels.iter().filter(|c| !c.outcome.is_ok()).count();
    out!(
        "{} new and {} updated messages in {:.1}s; {} requests, {} rate-limit waits ({} ms), {} retries, {} 429s{}",
        s.new,
        s.updated,
        s.seconds,
        s.requests.requests,
        if s.requests.waited_ms > 0 { "with" } else { "no" },
        s.requests.waited_ms,
        s.requests.retries,
        s.requests.rate_limited,
        if failed > 0 {
            format!("; {} not finished: rerun to continue", super::plural(failed as u64, "channel"))
        } else {
            String::new()
        },
    );
}

/// What became of the attachment files, in a few lines.
fn print_files(f: &FileSummary) {
    if f.wanted == 0 {
        return;
    }
    let mut not = Vec::new();
    for (n, what) in [
        (f.too_large, "too large"),
        (f.not_image, "not images"),
        (f.broken, "broken"),
        (f.gone, "gone from the CDN"),
        (f.refused, "not Discord CDN links"),
        (f.failed, "failed (rerun to retry)"),
        (f.left, "left for the next run"),
    ] {
        if n > 0 {
            not.push(format!("{n} {what}"));
        }
    }
    out!(
        "attachment files: {} stored ({:.1} MB in {:.1}s{}){}{}",
        f.stored,
        f.bytes as f64 / 1e6,
        f.seconds,
        if f.refreshed > 0 { format!(", {} links renewed", f.refreshed) } else { String::new() },
        if not.is_empty() { "; not stored: " } else { "" },
        not.join(", ")
    );
    for p in &f.problems {
        out!("  {} (message {}): {}: {}", p.filename, p.message_id, p.state.as_str(), p.detail);
    }
}
