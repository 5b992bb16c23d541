//! Step 2 of a question: the vector list. The question is embedded once per
//! model, each guild's collection is searched with the viewer's readable
//! channels as a filter *inside* the search, and the hits of all guilds are
//! merged by cosine.

use std::collections::HashMap;

use super::fuse::Candidate;
use super::{ms, SearchError, SearchedGuild, Searcher, Timings};

impl Searcher {
    /// The `depth` nearest chunks to `question` among what the viewer may read.
    pub(super) async fn vector_list(
        &self,
        question: &str,
        guilds: &[&SearchedGuild],
        depth: usize,
        timings: &mut Timings,
    ) -> Result<Vec<Candidate>, SearchError> {
        let t = std::time::Instant::now();
        let mut by_model: HashMap<&str, Vec<f32>> = HashMap::new();
        for g in guilds {
            if !by_model.contains_key(g.model.as_str()) {
                let embedder = self.embedder(g.guild, &g.model).await?;
                let text = question.to_owned();
                let mut vectors = crate::blocking::run(move || embedder.embed(&[text.as_str()], 1))
                    .await
                    .map_err(|source| SearchError::Model { guild: g.guild, model: g.model.clone(), source })?
                    .0;
                by_model.insert(&g.model, vectors.remove(0));
            }
        }
        timings.embed_ms = ms(t);

        let t = std::time::Instant::now();
        let searches = guilds.iter().map(|g| {
            let vector = by_model[g.model.as_str()].clone();
            async move {
                let hits = g.collection.search(vector, g.readable.channels(), depth).await?;
                Ok::<_, SearchError>(hits.into_iter().map(|h| Candidate {
                    guild: g.guild,
                    model: g.model.clone(),
                    chunk: h.id,
                    vector_score: Some(h.score),
                    bm25: None,
                    weight: 1.0,
                    payload: Some(h.payload),
                }))
            }
        });
        let mut list: Vec<Candidate> = futures::future::try_join_all(searches).await?.into_iter().flatten().collect();
        list.sort_by(|a, b| b.vector_score.partial_cmp(&a.vector_score).unwrap_or(std::cmp::Ordering::Equal));
        list.truncate(depth);
        timings.vector_ms = ms(t);
        Ok(list)
    }
}
