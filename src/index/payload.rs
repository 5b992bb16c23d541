//! What each point carries: a chunk's payload (with its text) and its
//! parts' (which point to the chunk instead).
//!
//! Each chunk is stored as its own point and one point per part (see
//! `chunk`); the manifest counts a chunk's parts, so they are replaced and
//! deleted with it.

use super::pipeline::Run;
use crate::chunk::Chunk;
use crate::snowflake;
use crate::vector::ChunkPayload;

impl Run<'_> {
    pub(super) fn payload(&self, c: &Chunk) -> ChunkPayload {
        ChunkPayload { text: c.text.clone(), ..self.payload_without_text(c) }
    }

    /// A chunk's payload but its text (which only the chunk's own point carries).
    fn payload_without_text(&self, c: &Chunk) -> ChunkPayload {
        let info = self.channels.get(&c.channel_id).cloned().unwrap_or_default();
        let time = |id: u64| snowflake::format_time(snowflake::timestamp(id));
        ChunkPayload {
            guild_id: self.guild,
            channel_id: c.channel_id,
            channel_name: info.name,
            parent_id: info.parent_id,
            is_thread: crate::discord::model::channel_type::is_thread(info.kind),
            author_ids: c.author_ids.clone(),
            author_names: c.author_names.clone(),
            message_ids: c.message_ids.clone(),
            first_message_id: c.first_message_id(),
            last_message_id: c.last_message_id(),
            piece: c.piece,
            start: time(c.first_message_id()),
            end: time(c.last_message_id()),
            text: String::new(),
            part_of: 0,
        }
    }

    /// A part's point carries what searches filter on, and its chunk's id
    /// (whose payload holds the text); not the text again.
    pub(super) fn part_payload(&self, c: &Chunk, part: &crate::chunk::Part) -> ChunkPayload {
        let first = part.message_ids[0];
        let last = *part.message_ids.last().expect("a part has messages");
        let chunk = self.payload_without_text(c);
        ChunkPayload {
            author_ids: part.author_ids.clone(),
            author_names: Vec::new(),
            message_ids: part.message_ids.clone(),
            first_message_id: first,
            last_message_id: last,
            start: snowflake::format_time(snowflake::timestamp(first)),
            end: snowflake::format_time(snowflake::timestamp(last)),
            part_of: c.id,
            ..chunk
        }
    }
}
