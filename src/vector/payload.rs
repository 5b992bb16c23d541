//! The chunk payload: what every point carries beside its vector. Stage two
//! (`index`) writes it, search reads it, and the stores index some of its
//! fields ([`ChunkPayload::INDEXED`]). This struct is that contract; nothing
//! else names payload keys.

use serde::{Deserialize, Serialize};

/// One chunk of conversation, as stored with its vector. Ids are JSON
/// numbers (the stores' integer indexes need them so).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkPayload {
    pub guild_id: u64,
    /// The channel or thread the chunk's messages are in.
    pub channel_id: u64,
    pub channel_name: String,
    /// For threads and forum posts: the channel they belong to.
    pub parent_id: Option<u64>,
    pub is_thread: bool,
    /// Distinct authors, in order of first appearance, with their display names.
    pub author_ids: Vec<u64>,
    pub author_names: Vec<String>,
    /// Every message of the chunk, oldest first.
    pub message_ids: Vec<u64>,
    pub first_message_id: u64,
    pub last_message_id: u64,
    /// Which piece of an over-long message (0 for ordinary chunks).
    pub piece: u32,
    /// When the first and last messages were sent (RFC 3339).
    pub start: String,
    pub end: String,
    /// The text that was embedded: one line per message (empty for a part).
    pub text: String,
    /// For a part's point: the chunk it stands for (0 for a chunk's own point).
    pub part_of: u64,
}

impl ChunkPayload {
    /// Fields with an integer index in every collection: what searches filter on.
    pub const INDEXED: [&'static str; 3] = ["channel_id", "author_ids", "first_message_id"];

    /// In a collection shared by guilds: the guild id as a string, the key
    /// Qdrant partitions tenants by (its tenant index takes keywords only).
    /// Not a field of the struct: the store adds it, and reading ignores it.
    pub const TENANT: &'static str = "tenant";

    /// The payload as the stores keep it: a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a chunk payload serializes")
    }

    /// A stored payload; an error says what does not fit.
    pub fn from_json(value: serde_json::Value) -> Result<ChunkPayload, serde_json::Error> {
        serde_json::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_fields_are_integers_in_the_stored_json() {
        let p = ChunkPayload {
            guild_id: 1,
            channel_id: 2,
            author_ids: vec![3, 4],
            message_ids: vec![5, 6],
            first_message_id: 5,
            last_message_id: 6,
            ..Default::default()
        };
        let json = p.to_json();
        for field in ChunkPayload::INDEXED {
            let v = &json[field];
            let ints = v.as_u64().is_some() || v.as_array().is_some_and(|a| a.iter().all(|x| x.as_u64().is_some()));
            assert!(ints, "{field} must be stored as integers: {v}");
        }
        assert_eq!(ChunkPayload::from_json(json).unwrap(), p);
    }

    #[test]
    fn payloads_written_before_this_type_still_read() {
        // As stage two wrote them with `json!` (parent_id null, no unknown keys needed).
        let old = serde_json::json!({"guild_id": 1, "channel_id": 2, "channel_name": "general", "parent_id": null,
            "is_thread": false, "author_ids": [3], "author_names": ["Ann"], "message_ids": [5],
            "first_message_id": 5, "last_message_id": 5, "piece": 0, "start": "2024-01-01T00:00:00Z",
            "end": "2024-01-01T00:00:00Z", "text": "Ann: hi"});
        let p = ChunkPayload::from_json(old).unwrap();
        assert_eq!((p.channel_name.as_str(), p.text.as_str(), p.parent_id), ("general", "Ann: hi", None));
        assert!(ChunkPayload::from_json(serde_json::json!({"channel_id": "not a number"})).is_err());
    }
}
