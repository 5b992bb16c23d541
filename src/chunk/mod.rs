//! Cutting conversations into chunks for embedding. Chat is not a document:
//! a chunk is a window of consecutive messages of one channel or thread, cut
//! at long silences and at the model's token budget, one line per message,
//! each line led by the author's display name, replies carrying a short quote
//! of what they answer. Messages that carry nothing searchable (system
//! messages, empty text, bots, command invocations) are left out, as the rules say.
//!
//! A chunk longer than `part_tokens` is also cut into **parts**: runs of its
//! lines of at most that many tokens, each embedded as a point of its own that
//! stands for the chunk. A question usually targets one message, and in a
//! window of ten its words are diluted; the parts let it be found (search
//! ranks a chunk by the best of its own and its parts' similarities), while
//! the whole window still answers questions about the conversation. Measured
//! on real chat with `scripts/eval-retrieval.sh`: see docs/benchmarks.md.
//!
//! Chunking is deterministic and stateless across chunk boundaries: chunking a
//! channel from any chunk's first message gives the same chunks from there on
//! as chunking it from the start. That is what lets stage two re-chunk only
//! the tail of a channel that changed. A chunk's id depends only on where it
//! starts (channel, first message, piece), so a chunk that grows keeps its id
//! and reruns upsert instead of duplicating.

use std::time::Duration;

use crate::discord::model::message_type;
use crate::embed::Prompts;

/// A message as the chunker sees it.
#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub id: u64,
    pub channel_id: u64,
    pub author_id: u64,
    pub author_name: String,
    pub author_is_bot: bool,
    pub content: String,
    pub kind: u8,
    pub reply_to: Option<u64>,
    /// Its image attachments, with what was read from them.
    pub images: Vec<ImageNote>,
}

/// An image attached to a message, as its line shows it: file name, alt
/// text, and the text read from the file (OCR), which is what makes a
/// screenshot of an error findable by the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageNote {
    pub filename: String,
    pub description: Option<String>,
    /// Read from the file (empty: nothing readable, or not read yet).
    pub text: String,
}

impl ImageNote {
    /// Whether it says more than a file name.
    fn says_something(&self) -> bool {
        !self.text.trim().is_empty() || self.description.as_deref().is_some_and(|d| !d.trim().is_empty())
    }

    /// `[image error.png (alt text): "text read from it"]`.
    fn render(&self) -> String {
        let mut out = format!("[image {}", one_line(&self.filename));
        if let Some(d) = self.description.as_deref().map(one_line).filter(|d| !d.is_empty()) {
            out.push_str(&format!(" ({d})"));
        }
        let text = one_line(&self.text);
        if !text.is_empty() {
            out.push_str(&format!(": \"{}\"", cut_chars(&text, IMAGE_TEXT_CHARS)));
        }
        out.push(']');
        out
    }
}

/// Characters of an image's text shown on its message's line: a screenshot
/// of a whole log would otherwise fill chunks on its own. (The keyword index
/// holds all of it.)
pub const IMAGE_TEXT_CHARS: usize = 600;

fn cut_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The chunking and filtering rules (part of an index's identity: changing
/// them means rebuilding the index).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChunkRules {
    /// A silence longer than this starts a new chunk.
    pub silence_minutes: u64,
    /// Most tokens a chunk's text may have (special tokens excluded).
    pub max_tokens: usize,
    /// Leave out messages by bot accounts.
    pub skip_bots: bool,
    /// Leave out messages by these authors.
    pub skip_authors: Vec<u64>,
    /// Leave out messages starting with one of these (bot command invocations).
    pub command_prefixes: Vec<String>,
    /// Words of the replied-to message quoted on a reply's line.
    pub quote_words: usize,
    /// Chunks longer than this are also cut into parts of at most this many
    /// tokens (whole lines), each embedded too; 0: no parts. Indexes made
    /// before parts existed read as 0.
    #[serde(default)]
    pub part_tokens: usize,
    /// The prompts texts are embedded with (the model's, or the settings'):
    /// the document prompt goes before each chunk's and part's text, the
    /// query prompt before each question. Not the chunker's concern, but
    /// recorded with its rules: an index is only searchable with the prompts
    /// it was built with, and a change means a rebuild. Indexes made before
    /// prompts were read have none.
    #[serde(default, skip_serializing_if = "Prompts::is_empty")]
    pub prompts: Prompts,
}

impl Default for ChunkRules {
    fn default() -> Self {
        ChunkRules {
            silence_minutes: 15,
            max_tokens: 254,
            skip_bots: true,
            skip_authors: Vec::new(),
            command_prefixes: vec!["!".into()],
            quote_words: 8,
            part_tokens: DEFAULT_PART_TOKENS,
            prompts: Prompts::default(),
        }
    }
}

/// Tokens per part: long enough for a message and the line it answers, short
/// enough that one message dominates (the model was trained on 128-token
/// inputs; 64, 96 and 128 measured alike, 96 costs the fewest points).
pub const DEFAULT_PART_TOKENS: usize = 96;

impl ChunkRules {
    /// Whether a message is left out of the index.
    pub fn skips(&self, m: &ChatMessage) -> bool {
        let text = m.content.trim();
        !message_type::is_conversation(m.kind)
            || (text.is_empty() && !m.images.iter().any(ImageNote::says_something))
            || (self.skip_bots && m.author_is_bot)
            || self.skip_authors.contains(&m.author_id)
            || self.command_prefixes.iter().any(|p| !p.is_empty() && text.starts_with(p.as_str()))
    }

    fn silence(&self) -> Duration {
        Duration::from_secs(self.silence_minutes * 60)
    }
}

/// A window of messages, ready to embed.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Stable id: from channel, first message and piece.
    pub id: u64,
    pub channel_id: u64,
    /// Which piece of an over-long message this is (0 otherwise).
    pub piece: u32,
    pub message_ids: Vec<u64>,
    /// Distinct authors, in order of first appearance.
    pub author_ids: Vec<u64>,
    pub author_names: Vec<String>,
    pub text: String,
    /// Tokens of `text`, special tokens excluded.
    pub tokens: usize,
    /// Changes whenever the text or the messages change.
    pub hash: u64,
    /// Runs of lines embedded on their own (empty for a short chunk); see the module doc.
    pub parts: Vec<Part>,
}

/// Consecutive lines of a chunk, embedded as a point that stands for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub message_ids: Vec<u64>,
    /// Distinct authors, in order of first appearance.
    pub author_ids: Vec<u64>,
    pub text: String,
}

impl Chunk {
    pub fn first_message_id(&self) -> u64 {
        self.message_ids[0]
    }

    pub fn last_message_id(&self) -> u64 {
        *self.message_ids.last().expect("a chunk has messages")
    }
}

/// 64-bit FNV-1a: stable across runs, platforms and versions (unlike std's hasher).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The point id of part `index` of chunk `chunk` (63 bits, like chunk ids).
pub fn part_id(chunk: u64, index: u32) -> u64 {
    let h = fnv1a(&[b"part", &chunk.to_le_bytes(), &index.to_le_bytes()]);
    (h & (i64::MAX as u64)).max(1)
}

/// The id of the chunk that starts at `first_message` (piece `piece`) in `channel`.
/// Fits in 63 bits (SQLite integers, JSON readers).
pub fn chunk_id(channel: u64, first_message: u64, piece: u32) -> u64 {
    let h = fnv1a(&[b"chunk", &channel.to_le_bytes(), &first_message.to_le_bytes(), &piece.to_le_bytes()]);
    (h & (i64::MAX as u64)).max(1)
}

struct Open {
    channel: u64,
    lines: Vec<String>,
    /// Tokens and author of each line.
    line_tokens: Vec<usize>,
    line_authors: Vec<u64>,
    message_ids: Vec<u64>,
    author_ids: Vec<u64>,
    author_names: Vec<String>,
    tokens: usize,
    last_id: u64,
}

/// Replied-to messages remembered for quotes; older ones are read back from the store.
const RECENT: usize = 4096;

/// Cuts one channel's messages, pushed in id order, into chunks.
pub struct Chunker<'a> {
    rules: &'a ChunkRules,
    count: &'a (dyn Fn(&str) -> usize + Sync),
    quote: &'a (dyn Fn(u64) -> Option<(String, String)> + Sync),
    open: Option<Open>,
    recent: std::collections::HashMap<u64, (String, String)>,
    recent_order: std::collections::VecDeque<u64>,
    /// A thread's or forum post's title, leading each of its chunks.
    title: Option<String>,
}

impl<'a> Chunker<'a> {
    /// `count` gives a text's tokens without special tokens; `quote` gives the
    /// (author, text) of a replied-to message the chunker has not seen.
    pub fn new(
        rules: &'a ChunkRules,
        count: &'a (dyn Fn(&str) -> usize + Sync),
        quote: &'a (dyn Fn(u64) -> Option<(String, String)> + Sync),
    ) -> Self {
        Chunker {
            rules,
            count,
            quote,
            open: None,
            recent: Default::default(),
            recent_order: Default::default(),
            title: None,
        }
    }

    /// Leads every chunk with `title` (`[title] ` before its first line): a
    /// thread or forum post is found by what it is called, and every chunk of
    /// it says what it is about. Left out of a chunk it would not fit.
    pub fn titled(mut self, title: Option<&str>) -> Self {
        self.title = title.map(one_line).filter(|t| !t.is_empty());
        self
    }

    /// Takes the next message; returns the chunks it closed.
    pub fn push(&mut self, m: ChatMessage) -> Vec<Chunk> {
        let rules = self.rules;
        let count = self.count;
        let budget = rules.max_tokens.max(8);
        let mut closed = Vec::new();
        let mut content = one_line(&m.content);
        self.remember(m.id, m.author_name.clone(), content.clone());
        if rules.skips(&m) {
            return closed;
        }
        for image in &m.images {
            if !content.is_empty() {
                content.push(' ');
            }
            content.push_str(&image.render());
        }
        let replied = m.reply_to.and_then(|r| self.recent.get(&r).cloned().or_else(|| (self.quote)(r)));
        let line = match replied {
            // A reply to a message without text (an image, a sticker) names whom it answers.
            Some((who, what)) if what.trim().is_empty() => {
                format!("{} (replying to {}): {content}", m.author_name, one_line(&who))
            }
            Some((who, what)) => {
                let words: Vec<&str> = what.split_whitespace().collect();
                let who = one_line(&who);
                let cut = words.len() > rules.quote_words;
                let mut q = words[..words.len().min(rules.quote_words)].join(" ");
                if cut {
                    q.push('…');
                }
                format!("{} (replying to {who}: \"{q}\"): {content}", m.author_name)
            }
            None => format!("{}: {content}", m.author_name),
        };
        let mut line = line;
        let mut tokens = count(&line);
        let silent = self.open.as_ref().is_some_and(|o| gap(o.last_id, m.id) > rules.silence());
        let full = self.open.as_ref().is_some_and(|o| o.tokens + tokens > budget);
        if silent || full || tokens > budget {
            if let Some(o) = self.open.take() {
                closed.push(close(o, 0, rules.part_tokens));
            }
        }
        if let (None, Some(title)) = (&self.open, &self.title) {
            let titled = format!("[{title}] {line}");
            let titled_tokens = count(&titled);
            if titled_tokens <= budget || tokens > budget {
                (line, tokens) = (titled, titled_tokens);
            }
        }
        if tokens > budget {
            // One message longer than the budget: several chunks, none truncated.
            for (piece, text) in split_to_budget(&line, budget, count).into_iter().enumerate() {
                let tokens = count(&text);
                let o = Open {
                    channel: m.channel_id,
                    tokens,
                    line_tokens: vec![tokens],
                    line_authors: vec![m.author_id],
                    lines: vec![text],
                    message_ids: vec![m.id],
                    author_ids: vec![m.author_id],
                    author_names: vec![m.author_name.clone()],
                    last_id: m.id,
                };
                closed.push(close(o, piece as u32, rules.part_tokens));
            }
            return closed;
        }
        let o = self.open.get_or_insert_with(|| Open {
            channel: m.channel_id,
            lines: Vec::new(),
            line_tokens: Vec::new(),
            line_authors: Vec::new(),
            message_ids: Vec::new(),
            author_ids: Vec::new(),
            author_names: Vec::new(),
            tokens: 0,
            last_id: m.id,
        });
        o.lines.push(line);
        o.line_tokens.push(tokens);
        o.line_authors.push(m.author_id);
        o.message_ids.push(m.id);
        if !o.author_ids.contains(&m.author_id) {
            o.author_ids.push(m.author_id);
            o.author_names.push(m.author_name.clone());
        }
        o.tokens += tokens;
        o.last_id = m.id;
        closed
    }

    /// Closes the last chunk.
    pub fn finish(self) -> Option<Chunk> {
        let part_tokens = self.rules.part_tokens;
        self.open.map(|o| close(o, 0, part_tokens))
    }

    fn remember(&mut self, id: u64, author: String, content: String) {
        if self.recent.insert(id, (author, content)).is_none() {
            self.recent_order.push_back(id);
            if self.recent_order.len() > RECENT {
                if let Some(old) = self.recent_order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
    }
}

/// Cuts one channel's messages (in id order) into chunks.
pub fn chunk_channel(
    messages: impl IntoIterator<Item = ChatMessage>,
    rules: &ChunkRules,
    count: &(dyn Fn(&str) -> usize + Sync),
    quote: &(dyn Fn(u64) -> Option<(String, String)> + Sync),
) -> Vec<Chunk> {
    let mut chunker = Chunker::new(rules, count, quote);
    let mut chunks = Vec::new();
    for m in messages {
        chunks.extend(chunker.push(m));
    }
    chunks.extend(chunker.finish());
    chunks
}

fn close(o: Open, piece: u32, part_tokens: usize) -> Chunk {
    let channel = o.channel;
    let parts = if part_tokens > 0 && o.tokens > part_tokens && o.lines.len() > 1 {
        parts(&o, part_tokens)
    } else {
        Vec::new()
    };
    let text = o.lines.join("\n");
    let mut hash_input = Vec::with_capacity(text.len() + 8 * o.message_ids.len());
    hash_input.extend_from_slice(text.as_bytes());
    for id in &o.message_ids {
        hash_input.extend_from_slice(&id.to_le_bytes());
    }
    Chunk {
        id: chunk_id(channel, o.message_ids[0], piece),
        channel_id: channel,
        piece,
        hash: fnv1a(&[&hash_input]) & (i64::MAX as u64),
        message_ids: o.message_ids,
        author_ids: o.author_ids,
        author_names: o.author_names,
        tokens: o.tokens,
        text,
        parts,
    }
}

/// Cuts a chunk's lines into runs of at most `budget` tokens (a longer line is
/// a run of its own). A cut that would leave the whole chunk as one part makes none.
fn parts(o: &Open, budget: usize) -> Vec<Part> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &t) in o.line_tokens.iter().enumerate() {
        if i > start && tokens + t > budget {
            runs.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens += t;
    }
    runs.push(start..o.lines.len());
    if runs.len() < 2 {
        return Vec::new();
    }
    runs.into_iter()
        .map(|r| {
            let mut author_ids: Vec<u64> = Vec::new();
            for &author in &o.line_authors[r.clone()] {
                if !author_ids.contains(&author) {
                    author_ids.push(author);
                }
            }
            Part { text: o.lines[r.clone()].join("\n"), message_ids: o.message_ids[r].to_vec(), author_ids }
        })
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn gap(earlier: u64, later: u64) -> Duration {
    Duration::from_millis((later >> 22).saturating_sub(earlier >> 22))
}

/// Splits a line into pieces of at most `budget` tokens, at word boundaries
/// where possible.
fn split_to_budget(line: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut tokens = 0;
    for word in line.split_whitespace() {
        let word_tokens = count(word);
        if word_tokens > budget {
            // A "word" longer than the budget (a pasted blob): cut it by characters;
            // a token covers at least one character, so `budget` characters fit.
            if !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
                tokens = 0;
            }
            let chars: Vec<char> = word.chars().collect();
            pieces.extend(chars.chunks(budget).map(|part| part.iter().collect::<String>()));
            continue;
        }
        if tokens + word_tokens > budget && !current.is_empty() {
            pieces.push(std::mem::take(&mut current));
            tokens = 0;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        tokens += word_tokens;
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[cfg(test)]
mod tests;
