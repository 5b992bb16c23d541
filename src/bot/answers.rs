//! Answers in `/ask`: a short answer written by the chat model from the
//! results the asker was just shown, edited into the same message as it is
//! written.
//!
//! - **One generation at a time.** The bot has one chat model ([`Answers`]:
//!   an embedded GGUF file, loaded in the background when the bot starts, or
//!   an OpenAI-compatible endpoint) and one [`Line`] in front of it: the
//!   request at its head is written, the others wait, each told its place
//!   ("you are number 2 in line": the one being written is number 1), and
//!   told again as the line moves.
//! - **Fair.** First come, first served, and a person has at most one
//!   request waiting: a new `/ask` from someone whose earlier request still
//!   waits takes that request's place in line, and the earlier message says
//!   it was replaced (only the newer question is answered). A request made
//!   while one's own answer is being written waits behind everyone already
//!   waiting.
//! - **Stoppable.** The message carries a Stop button while its answer waits
//!   or is written: a waiting request leaves the line; a running one ends
//!   with what was written so far. Only the asker's presses count.
//! - **Limits** (the `[answer]` settings): the question's length
//!   (`max_question_chars`, checked before anything waits), the answer's
//!   tokens (`max_answer_tokens`), and the time one answer may take once its
//!   turn comes (`timeout_secs`), after which it ends with what was written
//!   and a note. A request also never outlives its interaction token
//!   ([`super::BotOptions::interaction_ttl`]): its message can only be
//!   edited that long.
//! - **Only what the asker may read.** The model is given exactly the
//!   results the search returned for the asker (through
//!   [`crate::answer::answer`], which quotes them as data and checks the
//!   citations); its text is shown from its first valid citation on, each
//!   citation a link to the result it names.
//!
//! The message is edited at most every [`super::BotOptions::answer_edit_every`]
//! while the answer is written (not per token: Discord rate-limits edits).
//! The log has who asked, the model and how long it took; never the
//! question, the results or the answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serenity::all::{
    ButtonStyle, CommandInteraction, ComponentInteraction, CreateActionRow, CreateAllowedMentions, CreateButton,
    CreateEmbed, CreateInteractionResponse, CreateInteractionResponseMessage, EditInteractionResponse, Http,
};
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;

use super::format::{self, redact};
use super::Bot;
use crate::answer::{self, gguf, AnswerOptions, Finish, Generator, Written};
use crate::config::Settings;
use crate::search::SearchResult;

/// The custom id of a Stop button: this prefix and the request's key.
const STOP_PREFIX: &str = "answer-stop:";

/// The chat model that writes answers, when the bot has one.
pub struct Answers {
    /// Why there is no chat model (None: an endpoint is set, or a GGUF file
    /// is installed).
    off: Option<String>,
    /// The model, once loaded (or why it could not be).
    model: OnceCell<Result<Generator, String>>,
    /// The requests, in their turns.
    pub line: Arc<Line>,
}

impl Answers {
    /// What `settings` give: an endpoint, or the GGUF file `[answer] model`
    /// names (the only one installed when unnamed); nothing is loaded yet.
    pub fn new(settings: &Settings) -> Answers {
        let off = match &settings.answer.endpoint {
            Some(_) => None,
            None => {
                gguf::find(&settings.index.models_dir, settings.answer.model.as_deref()).err().map(|e| e.to_string())
            }
        };
        Answers { off, model: OnceCell::new(), line: Arc::default() }
    }

    /// Whether answers are on: a chat model is configured and did not fail to load.
    pub fn on(&self) -> bool {
        self.off.is_none() && !matches!(self.model.get(), Some(Err(_)))
    }

    /// Why answers are off, for the log.
    pub fn why_off(&self) -> Option<&str> {
        self.off.as_deref()
    }

    /// Loads the chat model in the background (on the blocking pool), so the
    /// first answer need not wait for it; nothing when answers are off.
    pub fn preload(self: &Arc<Self>, settings: &Settings) {
        if self.off.is_none() {
            let (answers, settings) = (self.clone(), settings.clone());
            tokio::spawn(async move {
                let _ = answers.generator(&settings).await;
            });
        }
    }

    /// The chat model, loaded on first use (the load is shared: a request
    /// that comes during it waits for it).
    pub async fn generator(&self, settings: &Settings) -> Result<Generator, String> {
        if let Some(why) = &self.off {
            return Err(why.clone());
        }
        self.model
            .get_or_init(|| async {
                let settings = settings.clone();
                let started = Instant::now();
                match crate::blocking::run(move || Generator::from_settings(&settings)).await {
                    Ok(g) => {
                        tracing::info!(
                            model = %g.name(),
                            ms = started.elapsed().as_millis() as u64,
                            "the chat model is ready: /ask writes answers"
                        );
                        Ok(g)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the chat model could not be loaded: /ask shows results without answers");
                        Err(e.to_string())
                    }
                }
            })
            .await
            .clone()
    }
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Waiting: number `n` in line (the answer being written is number 1).
    Waiting(usize),
    /// Its turn: its answer is being written.
    Turn,
    /// Left the line: a newer request of the same person took its place.
    Replaced,
    /// Left the line: stopped by its asker before its turn.
    Stopped,
}

/// What a press of Stop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The request was waiting; it left the line.
    Waiting,
    /// Its answer was being written; the generation ends with what was written.
    Running,
    /// The request is someone else's: nothing changed.
    NotYours,
    /// No such request (finished, or from before a restart).
    Unknown,
}

struct Entry {
    key: u64,
    user: u64,
    cancel: CancellationToken,
    place: Arc<watch::Sender<Place>>,
}

#[derive(Default)]
struct Queue {
    running: Option<Entry>,
    waiting: VecDeque<Entry>,
}

impl Queue {
    /// Tells every waiting request its place.
    fn renumber(&self) {
        let ahead = usize::from(self.running.is_some());
        for (i, e) in self.waiting.iter().enumerate() {
            let place = Place::Waiting(ahead + i + 1);
            e.place.send_if_modified(|p| std::mem::replace(p, place) != place);
        }
    }
}

/// The requests for one chat model, one written at a time, first come first
/// served, at most one waiting per person (see the module's notes).
#[derive(Default)]
pub struct Line {
    queue: Mutex<Queue>,
}

/// A request's hold on its place in a [`Line`]: leaving (dropping it) hands
/// the turn on, whatever the request's stage.
pub struct Ticket {
    line: Arc<Line>,
    key: u64,
    /// Where the request is; it changes as the line moves.
    pub place: watch::Receiver<Place>,
    /// Cancelled when its asker stops it while it runs (and when the bot stops).
    pub cancel: CancellationToken,
    // Keeps the channel open for as long as the ticket lives.
    _sender: Arc<watch::Sender<Place>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.line.leave(self.key);
    }
}

impl Line {
    /// Puts a request (`key`, unique) of `user` in line: at the head when
    /// nothing runs, else at the end, or in the place of `user`'s request
    /// that waits (which is told [`Place::Replaced`]).
    pub fn join(self: &Arc<Self>, key: u64, user: u64, cancel: CancellationToken) -> Ticket {
        let mut q = self.queue.lock().unwrap();
        let sender = Arc::new(watch::Sender::new(Place::Turn));
        let place = sender.subscribe();
        let entry = Entry { key, user, cancel: cancel.clone(), place: sender.clone() };
        if q.running.is_none() {
            q.running = Some(entry);
        } else if let Some(pos) = q.waiting.iter().position(|e| e.user == user) {
            let old = std::mem::replace(&mut q.waiting[pos], entry);
            old.place.send_replace(Place::Replaced);
        } else {
            q.waiting.push_back(entry);
        }
        q.renumber();
        Ticket { line: self.clone(), key, place, cancel, _sender: sender }
    }

    /// Stops `user`'s request `key`: a waiting one leaves the line (told
    /// [`Place::Stopped`]), a running one's generation is cancelled.
    pub fn stop(&self, key: u64, user: u64) -> Stop {
        let mut q = self.queue.lock().unwrap();
        if let Some(e) = q.running.as_ref().filter(|e| e.key == key) {
            if e.user != user {
                return Stop::NotYours;
            }
            e.cancel.cancel();
            return Stop::Running;
        }
        let Some(pos) = q.waiting.iter().position(|e| e.key == key) else {
            return Stop::Unknown;
        };
        if q.waiting[pos].user != user {
            return Stop::NotYours;
        }
        if let Some(e) = q.waiting.remove(pos) {
            e.place.send_replace(Place::Stopped);
        }
        q.renumber();
        Stop::Waiting
    }

    /// Requests waiting (not the one running).
    pub fn waiting(&self) -> usize {
        self.queue.lock().unwrap().waiting.len()
    }

    /// Takes `key` out of the line; when it was running, the next one's turn comes.
    fn leave(&self, key: u64) {
        let mut q = self.queue.lock().unwrap();
        if q.running.as_ref().is_some_and(|e| e.key == key) {
            q.running = q.waiting.pop_front();
            if let Some(next) = &q.running {
                next.place.send_replace(Place::Turn);
            }
        } else {
            q.waiting.retain(|e| e.key != key);
        }
        q.renumber();
    }
}

/// One `/ask` whose answer is to be written.
pub struct Request {
    pub http: Arc<Http>,
    /// The `/ask` interaction: its original response is the message edited.
    pub interaction: CommandInteraction,
    pub question: String,
    /// The results shown to the asker, as listed: all the model may read.
    pub results: Vec<SearchResult>,
    /// The results' embed, shown at once above the answer.
    pub embed: CreateEmbed,
}

/// Puts `request` in line and shows its results with the answer's first
/// state ("Writing an answer…", with its place when it waits) and a Stop
/// button; the answer is then written and edited in by a task of its own.
/// An error here (the first edit failed) leaves the line at once.
pub async fn start(bot: Arc<Bot>, request: Request) -> anyhow::Result<()> {
    let key = request.interaction.id.get();
    let user = request.interaction.user.id.get();
    let ticket = bot.answers.line.join(key, user, bot.shutdown.child_token());
    let place = *ticket.place.borrow();
    let expires = tokio::time::Instant::now() + bot.options.interaction_ttl;
    let mut job = Job { bot, request, key, expires, shown: None };
    let content = format::answer_waiting(waiting_number(place));
    let edit = job.edit(&content, true).embed(job.request.embed.clone());
    job.request.interaction.edit_response(&job.request.http, edit).await?;
    job.shown = Some((content, true));
    tracing::info!(user, place = ?place, waiting = job.bot.answers.line.waiting(), "answer requested");
    tokio::spawn(job.serve(ticket));
    Ok(())
}

fn waiting_number(place: Place) -> Option<usize> {
    match place {
        Place::Waiting(n) => Some(n),
        _ => None,
    }
}

/// The Stop button of request `key`.
fn stop_button(key: u64) -> CreateActionRow {
    CreateActionRow::Buttons(vec![CreateButton::new(format!("{STOP_PREFIX}{key}"))
        .label("Stop")
        .style(ButtonStyle::Secondary)])
}

/// A request on its way: it waits for its turn, then writes its answer.
struct Job {
    bot: Arc<Bot>,
    request: Request,
    key: u64,
    /// When its interaction token stops working (the margin the bot keeps).
    expires: tokio::time::Instant,
    /// The content (and whether with the Stop button) last shown.
    shown: Option<(String, bool)>,
}

/// How a running answer ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Its asker pressed Stop.
    Stopped,
    /// `[answer] timeout_secs` (or the interaction token's life) ran out.
    TimedOut,
    /// The bot is stopping.
    Shutdown,
}

impl Job {
    /// An edit of the message's content: no mentions, and the Stop button or none.
    fn edit(&self, content: &str, stop: bool) -> EditInteractionResponse {
        EditInteractionResponse::new()
            .content(content)
            .allowed_mentions(CreateAllowedMentions::new())
            .components(if stop { vec![stop_button(self.key)] } else { Vec::new() })
    }

    /// Shows `content` (the results stay), unless it is already shown.
    async fn show(&mut self, content: &str, stop: bool) {
        if self.shown.as_ref().is_some_and(|(c, s)| c == content && *s == stop) {
            return;
        }
        let edit = self.edit(content, stop);
        match self.request.interaction.edit_response(&self.request.http, edit).await {
            Ok(_) => self.shown = Some((content.to_owned(), stop)),
            Err(e) => tracing::warn!(error = %redact(&e.to_string()), "could not edit the answer's message"),
        }
    }

    async fn serve(mut self, mut ticket: Ticket) {
        // Its turn: wait for it, saying the place as it changes.
        loop {
            let place = *ticket.place.borrow_and_update();
            match place {
                Place::Turn => break,
                Place::Waiting(n) => self.show(&format::answer_waiting(Some(n)), true).await,
                Place::Replaced => return self.show(format::ANSWER_REPLACED, false).await,
                Place::Stopped => return self.show(format::ANSWER_STOPPED, false).await,
            }
            tokio::select! {
                _ = ticket.place.changed() => {}
                () = ticket.cancel.cancelled() => {
                    // The bot stops, or a Stop came as its turn came.
                    let text = if self.bot.shutdown.is_cancelled() {
                        format::ANSWER_SHUTDOWN
                    } else {
                        format::ANSWER_STOPPED
                    };
                    return self.show(text, false).await;
                }
                () = tokio::time::sleep_until(self.expires) => {
                    return self.show(format::ANSWER_WAITED_TOO_LONG, false).await;
                }
            }
        }
        self.write(&ticket).await;
        // Dropping the ticket hands the turn on, after the final edit.
    }

    /// Writes the answer (its turn has come) and shows it as it is written.
    async fn write(&mut self, ticket: &Ticket) {
        self.show(&format::answer_waiting(None), true).await;
        let bot = self.bot.clone();
        let settings = &bot.settings;
        let generator = match bot.answers.generator(settings).await {
            Ok(g) => g,
            Err(_) => return self.show(format::ANSWER_UNAVAILABLE, false).await,
        };
        let options = AnswerOptions::from(&settings.answer);
        let started = tokio::time::Instant::now();
        let limit = settings.answer.timeout.min(self.expires.saturating_duration_since(started));
        let cancel = ticket.cancel.child_token();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let results = std::mem::take(&mut self.request.results);
        let question = self.request.question.clone();
        let written = answer::answer(&generator, &question, &results, &options, Some(tx), cancel.clone());
        tokio::pin!(written);
        let every = bot.options.answer_edit_every.max(Duration::from_millis(100));
        let mut tick = tokio::time::interval_at(started + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut text = String::new();
        let mut timed_out = false;
        let written = loop {
            tokio::select! {
                written = &mut written => break written,
                Some(piece) = rx.recv() => text.push_str(&piece),
                _ = tick.tick() => {
                    if !text.trim().is_empty() {
                        self.show(&format::answer_streaming(&text), true).await;
                    }
                }
                () = tokio::time::sleep_until(started + limit), if !timed_out => {
                    timed_out = true;
                    cancel.cancel();
                }
            }
        };
        let ended = if timed_out {
            Ended::TimedOut
        } else if bot.shutdown.is_cancelled() {
            Ended::Shutdown
        } else {
            Ended::Stopped
        };
        let user = self.request.interaction.user.id.get();
        let content = match &written {
            Ok(w) => {
                tracing::info!(
                    user,
                    model = %w.model,
                    finish = ?w.finish,
                    found = w.found,
                    cited = w.citations.len(),
                    prompt_tokens = w.prompt_tokens,
                    generated_tokens = w.stats.generated_tokens,
                    ms = started.elapsed().as_millis() as u64,
                    "answer written"
                );
                final_content(w, ended, limit, settings.answer.max_answer_tokens)
            }
            Err(e) => {
                tracing::error!(user, error = %redact(&e.to_string()), "the answer could not be written");
                format::ANSWER_FAILED.to_owned()
            }
        };
        self.show(&content, false).await;
    }
}

/// The message's last content: the answer with its citations as links to
/// the results they name (or that none was found), and a note when it ended
/// early or was cut.
fn final_content(w: &Written, ended: Ended, limit: Duration, max_tokens: usize) -> String {
    let limit = format::human_duration(limit);
    if !w.found && w.finish == Finish::Cancelled {
        // Stopped before any of it could be shown.
        return match ended {
            Ended::TimedOut => format!("No answer: the time limit ({limit}) ran out before one was written."),
            Ended::Stopped => format::ANSWER_STOPPED.to_owned(),
            Ended::Shutdown => format::ANSWER_SHUTDOWN.to_owned(),
        };
    }
    let note = match (w.finish, ended) {
        (Finish::Cancelled, Ended::TimedOut) => {
            Some(format!("Stopped at the time limit ({limit}): the answer may be incomplete."))
        }
        (Finish::Cancelled, Ended::Stopped) => Some("Stopped: the answer may be incomplete.".to_owned()),
        (Finish::Cancelled, Ended::Shutdown) => Some("Stopped: the bot is shutting down.".to_owned()),
        (Finish::Length, _) if w.found => {
            Some(format!("The answer reached its length limit ({max_tokens} tokens) and was cut."))
        }
        _ => None,
    };
    let links: Vec<(usize, &str)> = w.citations.iter().map(|c| (c.result, c.link.as_str())).collect();
    format::answer_final(&w.model, w.text.as_deref(), &links, note.as_deref())
}

/// A button press: Stop on an answer's message.
pub async fn on_component(ctx: &serenity::all::Context, press: &ComponentInteraction, bot: &Arc<Bot>) {
    let Some(key) = press.data.custom_id.strip_prefix(STOP_PREFIX).and_then(|k| k.parse::<u64>().ok()) else {
        return;
    };
    let user = press.user.id.get();
    let stopped = bot.answers.line.stop(key, user);
    tracing::info!(user, outcome = ?stopped, "Stop pressed");
    let private = |text: &str| {
        CreateInteractionResponse::Message(CreateInteractionResponseMessage::new().content(text).ephemeral(true))
    };
    let response = match stopped {
        // The answer's own message says it stopped.
        Stop::Waiting | Stop::Running => CreateInteractionResponse::Acknowledge,
        Stop::NotYours => private("Only the person who asked can stop this answer."),
        Stop::Unknown => private("Nothing to stop: this answer is no longer being written."),
    };
    if let Err(e) = press.create_response(&ctx.http, response).await {
        tracing::warn!(error = %redact(&e.to_string()), "could not answer a Stop press");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(tickets: &[&Ticket]) -> Vec<Place> {
        tickets.iter().map(|t| *t.place.borrow()).collect()
    }

    #[test]
    fn the_line_is_first_come_first_served_and_says_each_place() {
        let line = Arc::new(Line::default());
        let a = line.join(1, 100, CancellationToken::new());
        let b = line.join(2, 200, CancellationToken::new());
        let c = line.join(3, 300, CancellationToken::new());
        assert_eq!(places(&[&a, &b, &c]), [Place::Turn, Place::Waiting(2), Place::Waiting(3)]);
        assert_eq!(line.waiting(), 2);
        drop(a);
        assert_eq!(places(&[&b, &c]), [Place::Turn, Place::Waiting(2)]);
        // A person's next request goes behind everyone already waiting.
        let b2 = line.join(4, 200, CancellationToken::new());
        assert_eq!(places(&[&b, &c, &b2]), [Place::Turn, Place::Waiting(2), Place::Waiting(3)]);
        drop(b);
        drop(c);
        assert_eq!(places(&[&b2]), [Place::Turn]);
        drop(b2);
        let d = line.join(5, 400, CancellationToken::new());
        assert_eq!(places(&[&d]), [Place::Turn], "an empty line serves at once");
    }

    #[test]
    fn a_second_request_while_one_waits_takes_its_place() {
        let line = Arc::new(Line::default());
        let _a = line.join(1, 100, CancellationToken::new());
        let b = line.join(2, 200, CancellationToken::new());
        let c = line.join(3, 300, CancellationToken::new());
        let b2 = line.join(4, 200, CancellationToken::new());
        assert_eq!(places(&[&b, &b2, &c]), [Place::Replaced, Place::Waiting(2), Place::Waiting(3)]);
        assert_eq!(line.waiting(), 2);
        // The replaced request's ticket leaves without touching the line.
        drop(b);
        assert_eq!(places(&[&b2, &c]), [Place::Waiting(2), Place::Waiting(3)]);
    }

    #[test]
    fn stop_takes_a_waiting_request_out_and_cancels_a_running_one_for_its_asker_only() {
        let line = Arc::new(Line::default());
        let a = line.join(1, 100, CancellationToken::new());
        let b = line.join(2, 200, CancellationToken::new());
        let c = line.join(3, 300, CancellationToken::new());
        assert_eq!(line.stop(2, 300), Stop::NotYours);
        assert_eq!(line.stop(2, 200), Stop::Waiting);
        assert_eq!(places(&[&b, &c]), [Place::Stopped, Place::Waiting(2)]);
        assert_eq!(line.stop(2, 200), Stop::Unknown, "already out");
        assert_eq!(line.stop(1, 300), Stop::NotYours);
        assert!(!a.cancel.is_cancelled());
        assert_eq!(line.stop(1, 100), Stop::Running);
        assert!(a.cancel.is_cancelled());
        assert_eq!(places(&[&a]), [Place::Turn], "a running request stays until its answer ends");
        drop(a);
        assert_eq!(places(&[&c]), [Place::Turn]);
        drop(b);
        assert_eq!(places(&[&c]), [Place::Turn]);
    }
}
