//! A guild's index records and the collections they name: the two
//! collections a model's index alternates between ([`collection_keys`]), the
//! name a rebuild goes by until it is swapped in ([`REBUILDING`]), finding an
//! index by model name ([`find_index`]), opening its collection
//! ([`open_collection`]) and making it the one search uses ([`activate`]).

use super::IndexError;
use crate::store::{IndexRecord, IndexState, Store};
use crate::vector::Backend;

/// The two collections a model's index of a guild alternates between (a
/// rebuild goes into the one not in use).
pub fn collection_keys(model: &str) -> [String; 2] {
    [model.to_owned(), format!("{model}~b")]
}

/// What a rebuild beside a complete index is recorded as until it is swapped
/// in: `<model>~rebuilding` (status lists it, building).
pub const REBUILDING: &str = "~rebuilding";

/// Makes a guild's complete index for `model` the one search uses: the
/// server's alias first (a no-op for the embedded store), then the archive's
/// record in one statement. Every switch (`index --activate`, `activate`, the
/// bot's `/reindex`) comes through here.
pub async fn activate(store: &Store, backend: &Backend, guild: u64, model: &str) -> Result<IndexRecord, IndexError> {
    let record = find_index(store, guild, model)?;
    if record.state != IndexState::Complete {
        return Err(IndexError::Incomplete { guild, model: record.model });
    }
    backend.activate(guild, record.key()).await?;
    store.activate_index(guild, &record.model)?;
    Ok(record)
}

/// Opens the collection that holds a guild's index for `model` (after a
/// rebuild it is not the one named after the model); `None` without one.
pub async fn open_collection(
    store: &Store,
    backend: &Backend,
    guild: u64,
    model: &str,
) -> Result<Option<crate::vector::Collection>, IndexError> {
    Ok(backend.open_existing(guild, &store.collection_key(guild, model)?).await?)
}

/// A guild's index by model name, the case of the name aside when only one
/// index fits; else an error that says what the guild has.
pub fn find_index(store: &Store, guild: u64, model: &str) -> Result<IndexRecord, IndexError> {
    if !store.has_guild(guild)? {
        return Err(IndexError::UnknownGuild(guild));
    }
    let mut records = store.index_records(Some(guild))?;
    if let Some(i) = records.iter().position(|r| r.model == model) {
        return Ok(records.swap_remove(i));
    }
    let same: Vec<usize> = (0..records.len()).filter(|&i| records[i].model.eq_ignore_ascii_case(model)).collect();
    if let [only] = same[..] {
        return Ok(records.swap_remove(only));
    }
    let has = records.into_iter().map(|r| r.model).collect();
    Err(IndexError::NoSuchIndex { guild, model: model.to_owned(), has })
}
