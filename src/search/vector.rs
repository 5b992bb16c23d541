//! Step 2 of a question: the vector list. The question is embedded once per
//! model, each guild's collection is searched with the viewer's readable
//! channels as a filter *inside* the search, and the hits of all guilds are
//! merged by cosine.
//!
//! A collection holds chunks and their parts (runs of a chunk's lines, see
//! `chunk`); a part's hit stands for its chunk. A chunk ranks by the best
//! similarity among its own point and its parts': a question about one
//! message finds the part that holds it, a question about the conversation
//! the whole window. To bring `depth` distinct chunks, the search reads
//! [`POINTS_PER_CHUNK`] times deeper.

use std::collections::HashMap;

use super::fuse::Candidate;
use super::{ms, Filters, Readable, SearchError, SearchedGuild, Searcher, Timings};
use crate::vector::{Collection, Hit};

/// How many points are read per chunk wanted (a chunk may come with several parts).
pub(super) const POINTS_PER_CHUNK: usize = 3;

impl Searcher {
    /// The `depth` nearest chunks to `question` among what the viewer may read.
    pub(super) async fn vector_list(
        &self,
        question: &str,
        guilds: &[&SearchedGuild],
        filters: &Filters,
        depth: usize,
        timings: &mut Timings,
    ) -> Result<Vec<Candidate>, SearchError> {
        let t = std::time::Instant::now();
        // Every guild here has an index: only keyword searches go without.
        let indexed: Vec<(u64, &str, &Collection, &Readable)> = guilds
            .iter()
            .filter_map(|g| g.index.as_ref().map(|(m, c)| (g.guild, m.as_str(), c.as_ref(), &g.readable)))
            .collect();
        // The question is embedded once per model and query prompt: the one
        // each index was built with (see `ChunkRules::prompts`).
        let mut prompts: Vec<String> = Vec::with_capacity(indexed.len());
        for &(guild, model, ..) in &indexed {
            let model = model.to_owned();
            let record = self.store.call(move |s| s.index_record(guild, &model)).await?;
            let rules = record.and_then(|r| serde_json::from_str::<crate::chunk::ChunkRules>(&r.chunking).ok());
            prompts.push(rules.map(|r| r.prompts.query).unwrap_or_default());
        }
        let mut by_model: HashMap<(&str, &str), Vec<f32>> = HashMap::new();
        for (&(guild, model, ..), prompt) in indexed.iter().zip(&prompts) {
            let std::collections::hash_map::Entry::Vacant(slot) = by_model.entry((model, prompt.as_str())) else {
                continue;
            };
            let embedder = self.embedder(guild, model).await?;
            let text = format!("{prompt}{question}");
            // Before any indexing step running beside it (live indexing).
            let vector = crate::blocking::run(move || embedder.embed_question(&text))
                .await
                .map_err(|source| SearchError::Model { guild, model: model.to_owned(), source })?;
            slot.insert(vector);
        }
        timings.embed_ms = ms(t);

        let t = std::time::Instant::now();
        let searches = indexed.iter().zip(&prompts).map(|(&(guild, model, collection, readable), prompt)| {
            let vector = by_model[&(model, prompt.as_str())].clone();
            async move {
                let hits =
                    collection.search(vector, filters.within(readable.channels()), depth * POINTS_PER_CHUNK).await?;
                Ok::<_, SearchError>(by_chunk(guild, model, hits))
            }
        });
        let mut list: Vec<Candidate> = futures::future::try_join_all(searches).await?.into_iter().flatten().collect();
        list.sort_by(|a, b| b.vector_score.partial_cmp(&a.vector_score).unwrap_or(std::cmp::Ordering::Equal));
        list.truncate(depth);
        timings.vector_ms = ms(t);
        Ok(list)
    }
}

/// Hits (best first) as chunks (best first): the first hit of a chunk, its
/// own or a part's, ranks it.
fn by_chunk(guild: u64, model: &str, hits: Vec<Hit>) -> Vec<Candidate> {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut chunks: Vec<Candidate> = Vec::new();
    for h in hits {
        let is_part = h.payload.part_of != 0;
        let chunk = if is_part { h.payload.part_of } else { h.id };
        match seen.get(&chunk) {
            // Found through a part before: keep the chunk's own payload when it comes.
            Some(&i) => {
                if !is_part {
                    chunks[i].payload = Some(h.payload);
                }
            }
            None => {
                seen.insert(chunk, chunks.len());
                chunks.push(Candidate {
                    guild,
                    model: model.to_owned(),
                    chunk,
                    vector_score: Some(h.score),
                    bm25: None,
                    coverage: None,
                    weight: 1.0,
                    near: if is_part { h.payload.message_ids.clone() } else { Vec::new() },
                    // A part's payload is not its chunk's: fetched when needed.
                    payload: (!is_part).then_some(h.payload),
                    matched: None,
                    pieces: Vec::new(),
                });
            }
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::ChunkPayload;

    fn hit(id: u64, score: f32, part_of: u64) -> Hit {
        let payload =
            ChunkPayload { part_of, text: format!("point {id}"), message_ids: vec![id], ..Default::default() };
        Hit { id, score, payload }
    }

    #[test]
    fn parts_stand_for_their_chunks_at_their_best_score() {
        // Chunk 1 found through its part 11 first, then itself; chunk 2 only itself; chunk 3 only through parts.
        let hits = vec![hit(11, 0.9, 1), hit(2, 0.8, 0), hit(1, 0.7, 0), hit(31, 0.6, 3), hit(32, 0.5, 3)];
        let out = by_chunk(7, "m", hits);
        let got: Vec<(u64, Option<f32>)> = out.iter().map(|c| (c.chunk, c.vector_score)).collect();
        assert_eq!(got, [(1, Some(0.9)), (2, Some(0.8)), (3, Some(0.6))]);
        // The chunk's own payload is kept when it came; a part's never stands in for it.
        assert_eq!(out[0].payload.as_ref().map(|p| p.text.as_str()), Some("point 1"));
        assert_eq!(out[1].payload.as_ref().map(|p| p.text.as_str()), Some("point 2"));
        assert!(out[2].payload.is_none());
        // A part that ranked its chunk says which lines were nearest the question.
        assert_eq!(
            (out[0].near.as_slice(), out[1].near.as_slice(), out[2].near.as_slice()),
            (&[11][..], &[][..], &[31][..])
        );
        assert!(out.iter().all(|c| c.guild == 7 && c.model == "m"));
    }
}
