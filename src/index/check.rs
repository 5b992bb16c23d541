//! The self-check of a collection against its manifest ([`check`], which
//! `status` and `ask` make too), and the repair a run starts from when it
//! fails ([`lost_chunks`]).
//!
//! Before a run, the collection's point count is
//! compared with the manifest's and a random sample of stored vectors is
//! read back (each must be unit length); a collection that lost points or
//! holds corrupted ones has those chunks taken out of the manifest and their
//! channels re-chunked from there, so the run re-embeds exactly them. After
//! a run the counts must agree, or the index is not marked complete.

use std::collections::HashSet;

use super::IndexError;
use crate::chunk::part_id;
use crate::store::{ChunkRecord, Store};

/// Chunks whose vectors are read back at each open to check the store.
const SAMPLE: usize = 16;

/// Whether a stored vector is one an embedding can be: every embedding is
/// normalized (and the store normalizes for cosine), so a vector of another
/// length, or not finite, was damaged on disk.
pub fn plausible(v: &[f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().all(|x| x.is_finite()) && (norm - 1.0).abs() < 0.01
}

/// A cheap check of a collection against its index, reading what a search
/// reads: the point count against the manifest's, one nearest-neighbour
/// search (stored vectors, and the payload of its hit), and a random sample
/// of stored vectors and payloads. `None` when all hold; else what is wrong,
/// in words: damage a plain run repairs (lost points, damaged vectors).
/// Damage it cannot repair (files or payloads the engine cannot read) is an
/// error that names the rebuild
/// ([`VectorError::Damaged`](crate::vector::VectorError::Damaged)).
pub async fn check(
    store: &Store,
    collection: &crate::vector::Collection,
    guild: u64,
    name: &str,
) -> Result<Option<String>, IndexError> {
    let (found, expected) = (collection.count().await?, store.manifest_points(guild, name)?);
    if found > 0 {
        let mut unit = vec![0.0; collection.dim()];
        unit[0] = 1.0;
        collection.search(unit, Default::default(), 1).await?;
    }
    let sample = store.manifest_sample(guild, name, SAMPLE)?;
    collection.payloads(sample.clone()).await?;
    if found < expected {
        return Ok(Some(format!("the vector store holds {found} of the {expected} points the index records")));
    }
    let vectors = collection.vectors(sample.clone()).await?;
    let bad = sample.len() - vectors.iter().filter(|(_, v)| plausible(v)).count();
    Ok((bad > 0).then(|| format!("{bad} of {} sampled vectors are missing or corrupted", sample.len())))
}

/// The chunks whose points the collection has lost or holds damaged, as
/// (channel, first message), after taking them out of the manifest (so a
/// run re-embeds them). First [`check`], the very check `status` and `ask`
/// make (so a store they call damaged is never called sound here); cheap
/// when all is well. When it finds a problem, every point is read back, its
/// vector and its payload. Damage a run cannot repair (a payload or file the
/// engine cannot read) is an error that names the rebuild, before anything
/// is written. (Not every point on every run: a large archive's periodic
/// catch-up would read millions of points to store a few.)
pub(super) async fn lost_chunks(
    store: &Store,
    guild: u64,
    model: &str,
    collection: &crate::vector::Collection,
) -> Result<Vec<(u64, u64)>, IndexError> {
    let Some(problem) = check(store, collection, guild, model).await? else {
        return Ok(Vec::new());
    };
    let manifest = store.manifest(guild, model)?;
    let mut lost: Vec<&ChunkRecord> = Vec::new();
    for batch in manifest.chunks(256) {
        let ids: Vec<u64> = batch
            .iter()
            .flat_map(|c| std::iter::once(c.chunk_id).chain((0..c.parts).map(|i| part_id(c.chunk_id, i))))
            .collect();
        collection.payloads(ids.clone()).await?;
        let sound: HashSet<u64> =
            collection.vectors(ids).await?.into_iter().filter(|(_, v)| plausible(v)).map(|(id, _)| id).collect();
        lost.extend(batch.iter().filter(|c| {
            !sound.contains(&c.chunk_id) || (0..c.parts).any(|i| !sound.contains(&part_id(c.chunk_id, i)))
        }));
    }
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    tracing::warn!(
        "the vector store of guild {guild} with model {model} is damaged ({}): re-embedding the {} chunks whose points \
         are missing or corrupted",
        problem,
        lost.len()
    );
    let ids: Vec<u64> = lost.iter().map(|c| c.chunk_id).collect();
    let model_name = model.to_owned();
    store.call(move |s| s.forget_chunks(guild, &model_name, &ids)).await?;
    Ok(lost.iter().map(|c| (c.channel_id, c.first_message_id)).collect())
}
