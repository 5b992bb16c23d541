//! What a run has to do: which index it continues or starts over (and
//! whether its settings still fit), from which archive version, and, per
//! changed channel, which chunks to embed again, keep or delete.
//!
//! How a rerun knows what to do: every write to the archive's messages
//! carries a growing version (deletions leave versioned tombstones). An index
//! records the version it has fully seen. A run looks only at channels with
//! newer changes, re-chunks each from the start of the indexed chunk that the
//! earliest change falls in (chunking is deterministic from any chunk start),
//! embeds the chunks that are new or whose content changed, deletes the points
//! of chunks that no longer exist, and finally records the new version.

use std::collections::HashSet;

use super::pipeline::Run;
use super::{collection_keys, IndexError, REBUILDING};
use crate::chunk::{part_id, ChunkRules, Chunker};
use crate::store::{IndexState, Store};

/// The index a run builds, and where: the model's own, continued or started
/// over, or (a `--rebuild` of a complete one) a new one beside it.
pub(super) struct Target {
    /// Its name in the archive: the model's, or `<model>~rebuilding` beside a
    /// complete index.
    pub(super) name: String,
    /// The collection it goes in (one of the model's [`collection_keys`]).
    pub(super) key: String,
    /// Built beside a complete index, to be swapped in when complete.
    pub(super) beside: bool,
    /// Built from scratch: its collection is dropped and its record and
    /// manifest started again.
    pub(super) reset: bool,
    /// The archive version the index has fully seen: changes after it are
    /// the run's work.
    pub(super) since: i64,
    /// It continues an interrupted run, whose stored chunks it keeps.
    pub(super) resuming: bool,
}

/// Which index a run for `model` builds, checked against the settings it
/// was built with: other dimensions or chunking rules are an error that
/// names the rebuild (an unfinished rebuild with other settings just starts
/// again), and a collection without a record is not trusted.
pub(super) fn target(
    store: &Store,
    guild: u64,
    model: &str,
    dim: usize,
    rules: &ChunkRules,
    rebuild: bool,
) -> Result<Target, IndexError> {
    // A rebuild of a complete index is built beside it, under another name
    // in the archive (`name`) and in the other of its two collections
    // (`key`), and swapped in when complete: search keeps answering from the
    // old one meanwhile, and a stopped rebuild resumes like any run.
    let current = store.index_record(guild, model)?;
    let beside = rebuild && current.as_ref().is_some_and(|r| r.state == IndexState::Complete);
    let (name, key) = match &current {
        Some(r) if beside => {
            let [first, second] = collection_keys(model);
            let other = if r.key() == first { second } else { first };
            (format!("{model}{REBUILDING}"), other)
        }
        Some(r) => (model.to_owned(), r.key().to_owned()),
        None => (model.to_owned(), model.to_owned()),
    };
    let existing = if beside { store.index_record(guild, &name)?.filter(|r| r.key() == key) } else { current };
    let mut reset = rebuild && !beside;
    match &existing {
        Some(record) if !reset => {
            // Compared as rules, so a record written before a rule existed reads with its default.
            let recorded: Option<ChunkRules> = serde_json::from_str(&record.chunking).ok();
            let (same_dim, same_rules) = (record.dim == dim, recorded.as_ref() == Some(rules));
            if beside && !(same_dim && same_rules) {
                // An unfinished rebuild with other settings: start it again.
                reset = true;
            } else if !same_dim {
                let model = model.to_owned();
                return Err(IndexError::DimensionChanged { guild, model, found: record.dim, wanted: dim });
            } else if !same_rules {
                return Err(IndexError::ChunkingChanged { guild, model: model.to_owned() });
            }
        }
        Some(_) => {}
        // No record: any collection left on disk is not ours to trust.
        None => reset = true,
    }
    let since = if reset { 0 } else { existing.as_ref().map_or(0, |r| r.version) };
    let resuming = matches!(&existing, Some(r) if !reset && r.state == IndexState::Building);
    Ok(Target { name, key, beside, reset, since, resuming })
}

/// Messages read from the archive per query.
const READ_PAGE: usize = 2000;

impl Run<'_> {
    /// Re-chunks one channel from the chunk its first change falls in.
    pub(super) async fn channel(
        &mut self,
        channel: u64,
        first_change: u64,
        rules: &ChunkRules,
    ) -> Result<(), IndexError> {
        let (guild, model) = (self.guild, self.model.to_owned());
        let (start, known) = self
            .store
            .call(move |s| {
                let start = s.chunk_start_before(guild, &model, channel, first_change)?.unwrap_or(0);
                Ok((start, s.chunks_from(guild, &model, channel, start)?))
            })
            .await?;
        let mut seen: HashSet<u64> = HashSet::new();
        let embedder = self.embedder.clone();
        let count = move |text: &str| embedder.count_content_tokens(text);
        let quote_store = self.store.clone();
        let quote = move |id: u64| quote_store.quote(id, channel).ok().flatten();
        // Threads and forum posts: each chunk leads with the title.
        let title = self
            .channels
            .get(&channel)
            .filter(|info| crate::discord::model::channel_type::is_thread(info.kind))
            .map(|info| info.name.clone());
        let mut chunker = Chunker::new(rules, &count, &quote).titled(title.as_deref());
        let mut from = start;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(IndexError::Interrupted);
            }
            let page = self.store.call(move |s| s.chat_messages(channel, from, READ_PAGE)).await?;
            let done = page.len() < READ_PAGE;
            if let Some(last) = page.last() {
                from = last.id + 1;
            }
            self.counts.messages += page.len() as u64;
            let mut closed = Vec::new();
            for m in page {
                closed.extend(chunker.push(m));
            }
            if done {
                closed.extend(
                    std::mem::replace(&mut chunker, Chunker::new(rules, &count, &quote).titled(title.as_deref()))
                        .finish(),
                );
            }
            for chunk in closed {
                seen.insert(chunk.id);
                match known.get(&chunk.id) {
                    Some(&(hash, _)) if hash == chunk.hash => {
                        self.counts.unchanged += 1;
                        self.counts.skipped += chunk.message_ids.len() as u64;
                    }
                    stored => {
                        let stored_parts = stored.map_or(0, |&(_, parts)| parts);
                        self.pending.push((chunk, stored_parts));
                    }
                }
                // Flushed as steps fill, not once a page: progress and
                // Ctrl-C are answered within a step's time.
                if self.pending.len() >= self.batch {
                    self.flush().await?;
                }
            }
            self.report();
            if done {
                break;
            }
        }
        // Chunks that no longer exist: delete their points, then forget them.
        let gone: Vec<u64> = known.keys().filter(|id| !seen.contains(id)).copied().collect();
        if !gone.is_empty() {
            // A pending upsert of a gone id cannot exist (ids are unique per start), but
            // keep order simple: store what is pending first.
            self.drain().await?;
            let points =
                gone.iter().flat_map(|&c| std::iter::once(c).chain((0..known[&c].1).map(move |i| part_id(c, i))));
            self.collection.delete(points.collect()).await?;
            self.collection.persist().await?;
            let (guild, model) = (self.guild, self.model.to_owned());
            let n = gone.len() as u64;
            self.store.call(move |s| s.forget_chunks(guild, &model, &gone)).await?;
            self.counts.deleted += n;
            self.report();
        }
        Ok(())
    }
}
