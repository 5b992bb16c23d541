//! `discord-indexer ask`: search indexed guilds from the command line.

use std::io::IsTerminal;
use std::time::Instant;

use super::{exit, shutdown_on_signal};
use crate::answer::{self, check_question, AnswerOptions, Finish, Generator, Written, NOT_FOUND};
use crate::config::Settings;
use chrono::{DateTime, Utc};

use crate::search::filters::{parse_date, FilterRequest};
use crate::search::{Mode, Query, SearchResult, Searcher, Viewer};
use crate::store::Store;

/// Search the archive: hybrid vector + keyword search over the active index
/// of each guild, as the operator (every channel) or, with --as-user, as a
/// member (only what they may read now).
///
/// `--answer` also has a chat model write a short answer from the top
/// results, citing them by their numbers (`[1]` is the first result), with
/// the cited results' links; an answer that cites none is shown as "no
/// answer found in the messages you can read". The model reads only these
/// results: what the asker may read.
///
/// `--json` prints an array of results (ids as strings); with `--answer`, an
/// object `{results, answer, timings}`. Exit codes: 0 answered (possibly
/// with no results, or no answer found), 1 some guilds could not be searched
/// (see stderr), 2 bad input, no usable index, or no usable chat model, 130
/// an answer stopped by Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The question.
    pub question: String,
    /// Guild id to search; repeat for several (default: every guild with an active index).
    #[arg(long = "guild", value_name = "ID", value_parser = super::discord_id)]
    pub guilds: Vec<u64>,
    /// Search as this Discord user: only channels and threads they may read.
    /// Permissions are refreshed from Discord when stale (needs DISCORD_TOKEN).
    #[arg(long, value_name = "USER_ID", value_parser = super::discord_id)]
    pub as_user: Option<u64>,
    /// How many results.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
    /// Which search: hybrid (default), vector or keyword.
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    pub mode: Mode,
    /// Only this channel (an id, or a name such as `general` or `#general`),
    /// with its threads and forum posts; repeat for several.
    #[arg(long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
    /// Only messages by this user (an id, or a user or display name); repeat for several.
    #[arg(long = "author", value_name = "USER")]
    pub authors: Vec<String>,
    /// Only messages sent at or after this time: `2024-05-01`, `2024-05-01 14:30`
    /// or RFC 3339 (times without an offset are UTC).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub after: Option<DateTime<Utc>>,
    /// Only messages sent before this time (same forms as --after).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub before: Option<DateTime<Utc>>,
    /// Also write a short answer from the top results, citing them: with the
    /// chat model of [answer] in the config file (a GGUF file in the models
    /// directory, or an OpenAI-compatible endpoint).
    #[arg(long)]
    pub answer: bool,
    /// The GGUF chat model to answer with: a file name in the models directory,
    /// with or without .gguf (default: [answer] model, else the only one there).
    #[arg(long, value_name = "NAME", requires = "answer")]
    pub chat_model: Option<String>,
    /// Reorder the first results with this cross-encoder (a model directory
    /// in the models directory, e.g. ms-marco-MiniLM-L6-v2; default:
    /// [search] reranker, if set).
    #[arg(long, value_name = "NAME", conflicts_with = "no_rerank")]
    pub rerank: Option<String>,
    /// Do not rerank, even if [search] reranker is set.
    #[arg(long)]
    pub no_rerank: bool,
}

pub async fn run(args: Args, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    if args.question.trim().is_empty() {
        anyhow::bail!("the question is empty");
    }
    if args.answer {
        check_question(&args.question, settings.answer.max_question_chars).map_err(anyhow::Error::msg)?;
        if args.chat_model.is_some() && settings.answer.endpoint.is_some() {
            anyhow::bail!(
                "--chat-model picks a GGUF file, but [answer] endpoint is set in the config file, and answers are \
                 written there: remove endpoint to answer with a file"
            );
        }
    }
    let store = Store::open_existing(&settings.data_dir)?;
    let mut guilds = args.guilds.clone();
    if guilds.is_empty() {
        guilds = store.active_indexes()?.into_iter().map(|a| a.guild_id).collect();
        if guilds.is_empty() && args.mode == Mode::Keyword {
            // The keyword index needs no stage two: every loaded guild.
            guilds = store.guilds()?.into_iter().map(|(id, ..)| id).collect();
        }
        if guilds.is_empty() {
            anyhow::bail!(
                "no guild in {} has an active index: run `discord-indexer index --guild ID` first \
                 (`ask --mode keyword` needs only `load`)",
                settings.data_dir.display()
            );
        }
    }
    let request = FilterRequest {
        channels: args.channels.clone(),
        authors: args.authors.clone(),
        after: args.after,
        before: args.before,
    };
    // The operator owns the archive: names resolve with every channel and
    // user in it, and a miss lists the closest ones.
    let filters = request.resolve_for_operator(&store, &guilds)?;
    let asker = match args.as_user {
        Some(user) => match store.user_label(user)? {
            Some(label) => format!("{label}, user {user}"),
            None => format!("user {user} (not seen in the archive)"),
        },
        None => String::new(),
    };
    let viewer = args.as_user.map_or(Viewer::Operator, Viewer::User);
    let client = match (&settings.token, viewer) {
        (Some(token), Viewer::User(_)) => Some(settings.client(token.clone())?),
        _ => None,
    };
    let mut options = settings.search.clone();
    if args.rerank.is_some() || args.no_rerank {
        options.reranker = args.rerank.clone();
    }
    let searcher = Searcher::new(store, settings.backend()?, settings.index.models_dir.clone(), client, options);
    let query = Query {
        text: args.question.clone(),
        guilds: guilds.clone(),
        viewer,
        limit: args.limit as usize,
        mode: args.mode,
        filters,
    };
    // The chat model loads while the search runs.
    let generator = args.answer.then(|| {
        let mut settings = settings.clone();
        if let Some(name) = &args.chat_model {
            settings.answer.model = Some(name.clone());
        }
        crate::blocking::spawn(move || {
            let started = Instant::now();
            Generator::from_settings(&settings).map(|g| (g, ms(started)))
        })
    });
    let found = searcher.ask(&query).await?;
    let generator = match generator {
        Some(pending) => Some(pending.join().await?),
        None => None,
    };
    // Whom the results are for; after the search, so that bad input is the only message.
    match viewer {
        Viewer::Operator => {
            say!("searched as the operator: every stored channel (use --as-user ID to search as a member)")
        }
        Viewer::User(_) => say!("searched as {asker}: only the channels and threads they may read now"),
    }
    for note in &found.notes {
        say!("note: {note}");
    }
    let code = if found.searched.len() < guilds.len() { exit::PARTIAL } else { exit::OK };
    if let Some((generator, load_ms)) = generator {
        let options = AnswerOptions::from(&settings.answer);
        let written = write_answer(&generator, &args.question, &found.results, &options, json).await?;
        if json {
            // The backend's count; the budget's when it had none (nothing was asked).
            let prompt_tokens =
                if written.stats.prompt_tokens > 0 { written.stats.prompt_tokens } else { written.prompt_tokens };
            let timings = serde_json::json!({
                "retrieval_ms": found.timings.total_ms,
                "model_load_ms": load_ms,
                "prompt_tokens": prompt_tokens,
                "first_token_ms": written.stats.first_token_ms,
                "prompt_tokens_per_s": written.stats.prompt_tokens_per_s,
                "generated_tokens": written.stats.generated_tokens,
                "tokens_per_s": written.stats.tokens_per_s,
                "generation_ms": written.stats.total_ms,
            });
            let body = serde_json::json!({ "results": found.results, "answer": written, "timings": timings });
            out!("{}", serde_json::to_string_pretty(&body)?);
        } else {
            print_results(&found.results, args.mode);
        }
        return Ok(if written.finish == Finish::Cancelled { exit::INTERRUPTED } else { code });
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&found.results)?);
    } else {
        print_results(&found.results, args.mode);
    }
    Ok(code)
}

/// The results for a person.
fn print_results(results: &[SearchResult], mode: Mode) {
    if results.is_empty() {
        out!("nothing found");
        return;
    }
    for (i, r) in results.iter().enumerate() {
        let when = r.time.get(..16).unwrap_or(&r.time).replace('T', " ");
        out!("{}. {} · {} · {when} UTC · {}", i + 1, place(r), r.authors.join(", "), why(r, mode));
        out!("   {}", r.jump_url);
        for line in r.text.lines() {
            out!("   │ {line}");
        }
        out!();
    }
}

/// Where a result is, for a person.
fn place(r: &SearchResult) -> String {
    if r.is_thread {
        format!("thread “{}”", r.channel_name)
    } else {
        format!("#{}", r.channel_name)
    }
}

/// Writes the answer; for a person (not `json`), prints it: on a terminal
/// as it is written (the checked text, from the first valid citation on),
/// then the cited results' links and notes. Ctrl-C stops the generation
/// and keeps what was written.
async fn write_answer(
    generator: &Generator,
    question: &str,
    results: &[SearchResult],
    options: &AnswerOptions,
    json: bool,
) -> anyhow::Result<Written> {
    let cancel =
        shutdown_on_signal("stopping the answer: what was written so far follows (Ctrl-C again to quit at once)");
    let live = !json && std::io::stdout().is_terminal();
    // Printed with the first of the answer: a model that fails prints nothing.
    let header = format!("Answer ({}):", generator.name());
    let (pieces, printer) = if live {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let bar = super::progress_bar(None, "{spinner} writing the answer… {elapsed}");
        let header = header.clone();
        let printer = tokio::spawn(async move {
            let mut shown = String::new();
            while let Some(piece) = rx.recv().await {
                if shown.is_empty() {
                    bar.finish_and_clear();
                    out!("{header}");
                }
                write_piece(&piece);
                shown.push_str(&piece);
            }
            bar.finish_and_clear();
            shown
        });
        (Some(tx), Some(printer))
    } else {
        (None, None)
    };
    let written = answer::answer(generator, question, results, options, pieces, cancel).await;
    let shown = match printer {
        Some(p) => p.await.unwrap_or_default(),
        None => String::new(),
    };
    let written = written?;
    if json {
        return Ok(written);
    }
    if shown.is_empty() {
        out!("{header}");
    }
    match &written.text {
        Some(text) if shown.trim() == text.as_str() => out!(),
        Some(text) if shown.is_empty() => out!("{text}"),
        Some(text) => {
            // The pieces did not add up to the text (a backend that trims its end): the checked whole.
            out!();
            out!("{text}");
        }
        None => out!("{NOT_FOUND}"),
    }
    if !written.citations.is_empty() {
        out!();
        out!("Sources:");
        for c in &written.citations {
            let r = &results[c.result - 1];
            out!("[{}] {} · {} · {}", c.result, place(r), r.authors.join(", "), c.link);
        }
    }
    out!();
    match written.finish {
        Finish::Cancelled => say!("note: stopped by Ctrl-C: the answer is incomplete"),
        Finish::Length => say!(
            "note: the answer reached its limit of {} tokens ([answer] max_answer_tokens) and was cut",
            options.max_answer_tokens
        ),
        Finish::Stop => {}
    }
    if written.cut {
        say!("note: result 1 is longer than the model's window allows; it read the start of it");
    }
    if written.left_out > 0 {
        say!(
            "note: the model read results {}; {} more did not fit its window",
            span(&written.sources),
            written.left_out
        );
    }
    if written.dropped_citations > 0 {
        say!(
            "note: {} removed from the answer: they named results the model was not given",
            super::plural(written.dropped_citations as u64, "citation")
        );
    }
    Ok(written)
}

/// `1-3`, `1`, or `none` for sources 1 to 3, 1, or none.
fn span(sources: &[usize]) -> String {
    match (sources.first(), sources.last()) {
        (Some(a), Some(b)) if a != b => format!("{a}-{b}"),
        (Some(a), _) => a.to_string(),
        _ => "none".into(),
    }
}

/// A piece of the answer on a terminal, as it is written (control
/// characters shown, not obeyed: the model may repeat chat text).
fn write_piece(piece: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(super::terminal_safe(piece).as_bytes()).and_then(|()| stdout.flush());
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Why a result ranks where it does, in words: the similarity of its
/// conversation to the question, and the share of the question's words
/// (rare words weigh more) that its best message holds.
fn why(r: &SearchResult, mode: Mode) -> String {
    let similar = r.vector_score.map(|v| format!("similarity {v:.2}"));
    let words = match mode {
        Mode::Keyword => Some(format!("{:.0}% of the words", r.score * 100.0)),
        _ => r.keyword_rank.map(|k| format!("keyword #{k}")),
    };
    let why = match (similar, words) {
        (Some(v), Some(k)) => format!("{v}, {k}"),
        (Some(v), None) => v,
        (None, Some(k)) => k,
        (None, None) => format!("score {:.4}", r.score),
    };
    match r.rerank_score {
        Some(s) => format!("reranked {s:.2}; {why}"),
        None => why,
    }
}
