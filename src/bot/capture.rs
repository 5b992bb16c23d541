//! Live capture: gateway events into the archive, as the rows a load writes.
//!
//! - MESSAGE_CREATE and MESSAGE_UPDATE in loaded channels (those with a
//!   checkpoint) are stored as the rows a load writes (an edit replaces the
//!   stored copy only if it is newer). MESSAGE_DELETE removes the message and
//!   leaves a tombstone, so stage two drops it and a late MESSAGE_CREATE for
//!   it (the handlers run concurrently) cannot bring it back. Direct messages
//!   and the bot's own edits are never stored live. Reactions an edit event
//!   does not carry are kept. The `raw` column holds the event as serenity
//!   re-serialises it (fields serenity does not model are missing until a
//!   later edit is loaded).
//! - THREAD_CREATE and CHANNEL_CREATE in a loaded guild queue the new channel
//!   for a load ([`super::schedule`]), which picks it up with its first
//!   messages.
//! - CHANNEL_UPDATE, GUILD_ROLE_UPDATE and GUILD_ROLE_DELETE (overwrites or
//!   roles changed) make the next search read the guild's permissions from
//!   Discord again, instead of using stored ones younger than the allowed age.
//! - READY (a new gateway session, not RESUMED) starts the catch-up
//!   ([`super::schedule`]): events from before the session may be lost.
//!
//! Every write reports to [`super::checkpoints::Live`], which decides when a
//! live message may move its channel's checkpoint, and each stored change to
//! [`super::follow::Follow`], which brings the guild's index up to date.

use std::sync::Arc;

use serde_json::Value;
use serenity::all::FullEvent;

use super::Bot;
use crate::discord::model::{channel_type, Message, Raw};

/// The framework's event handler.
pub async fn on_event(_ctx: &serenity::all::Context, event: &FullEvent, bot: &Arc<Bot>) -> Result<(), super::Error> {
    match event {
        FullEvent::Ready { data_about_bot } => {
            *bot.me.lock().unwrap() = Some(data_about_bot.user.id.get());
            let session = bot.live.new_session();
            tracing::info!(session, "gateway session began: catching up");
            tokio::spawn(super::schedule::catch_up(bot.clone(), session));
        }
        FullEvent::Resume { .. } => tracing::info!("gateway session resumed"),
        FullEvent::Message { new_message } => {
            if let Some(guild) = new_message.guild_id {
                store_live(bot, guild.get(), serde_json::to_value(new_message)?, false).await;
            }
        }
        FullEvent::MessageUpdate { event, .. } => {
            if let Some(guild) = event.guild_id {
                let value = serde_json::to_value(event)?;
                // Embed unfurls and other partial updates carry no text or edit time: nothing to store.
                let full = ["author", "content", "edited_timestamp", "timestamp"]
                    .iter()
                    .all(|k| value.get(*k).is_some_and(|v| !v.is_null()));
                if full {
                    store_live(bot, guild.get(), value, true).await;
                }
            }
        }
        FullEvent::MessageDelete { channel_id, deleted_message_id, guild_id: Some(guild) } => {
            delete_live(bot, guild.get(), channel_id.get(), vec![deleted_message_id.get()]).await;
        }
        FullEvent::MessageDeleteBulk { channel_id, multiple_deleted_messages_ids, guild_id: Some(guild) } => {
            let ids = multiple_deleted_messages_ids.iter().map(|m| m.get()).collect();
            delete_live(bot, guild.get(), channel_id.get(), ids).await;
        }
        // Who may read what changed: search reads the guild's roles and
        // overwrites from Discord again before it shows anything.
        FullEvent::ChannelUpdate { new, .. } => permissions_changed(bot, new.guild_id.get()).await,
        FullEvent::GuildRoleUpdate { new, .. } => permissions_changed(bot, new.guild_id.get()).await,
        FullEvent::GuildRoleDelete { guild_id, .. } => permissions_changed(bot, guild_id.get()).await,
        FullEvent::ThreadCreate { thread } => {
            new_channel(bot, thread.guild_id.get(), thread.id.get(), u8::from(thread.kind)).await
        }
        FullEvent::ChannelCreate { channel } => {
            new_channel(bot, channel.guild_id.get(), channel.id.get(), u8::from(channel.kind)).await
        }
        _ => {}
    }
    Ok(())
}

/// Stores a message event (`edit`: MESSAGE_UPDATE) of a loaded channel.
async fn store_live(bot: &Arc<Bot>, guild: u64, mut value: Value, edit: bool) {
    // Serenity writes absent fields as null; the archive's model wants them absent.
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let raw: Raw<Message> = match serde_json::from_str(&value.to_string()) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(error = %e, "a message event could not be read; the next load fetches it");
            if let Some(channel) = value["channel_id"].as_str().and_then(|c| c.parse().ok()) {
                bot.live.taint(channel);
            }
            return;
        }
    };
    // The bot edits its progress messages every few seconds: those edits are
    // left to loads (its new messages are stored, as loads store them).
    if edit && Some(raw.value.author.id) == *bot.me.lock().unwrap() {
        return;
    }
    let (channel, id) = (raw.value.channel_id, raw.value.id);
    let keep_reactions = value.get("reactions").is_none();
    bot.live.begin_write(channel);
    let result = bot
        .store
        .call(move |store| {
            if store.loaded_channel_guild(channel)? != Some(guild) {
                // Not loaded (yet): a load that is running may have passed it already.
                return Ok(Err(()));
            }
            store.write_live(guild, &raw, keep_reactions)?;
            Ok(Ok(if edit { None } else { Some(id) }))
        })
        .await;
    match result {
        Ok(stored) => {
            if stored.is_ok() {
                bot.follow.changed(guild, 1);
            }
            bot.live.end_write(channel, stored)
        }
        Err(e) => {
            tracing::warn!(channel, error = %e, "a live message could not be stored; the next load fetches it");
            bot.live.end_write(channel, Err(()));
        }
    }
}

async fn delete_live(bot: &Arc<Bot>, guild: u64, channel: u64, ids: Vec<u64>) {
    let n = ids.len() as u64;
    let result = bot
        .store
        .call(move |store| {
            if store.loaded_channel_guild(channel)? != Some(guild) {
                return Ok(false);
            }
            store.delete_seen(guild, channel, &ids)?;
            Ok(true)
        })
        .await;
    match result {
        Ok(true) => bot.follow.changed(guild, n),
        Ok(false) => {}
        // A missed delete leaves a message that Discord no longer has; the archive keeps it.
        Err(e) => tracing::warn!(channel, error = %e, "a deletion could not be recorded"),
    }
}

async fn permissions_changed(bot: &Arc<Bot>, guild: u64) {
    if let Err(e) = bot.store.call(move |s| s.permissions_changed(guild)).await {
        // Then the stored permissions stay in use until they are older than allowed.
        tracing::warn!(guild, error = %e, "a permission change could not be recorded");
    }
}

/// A channel or thread appeared: queue it for a load if its guild is loaded;
/// one load per guild takes what is queued.
async fn new_channel(bot: &Arc<Bot>, guild: u64, channel: u64, kind: u8) {
    if !channel_type::holds_messages(kind) {
        return;
    }
    // Threads and forum posts follow their guild (a forum holds no messages, so it has no checkpoint).
    let loaded = bot.store.call(|s| s.loaded_guilds()).await.is_ok_and(|g| g.contains(&guild));
    if !loaded || !bot.live.queue_new_channel(guild, channel) {
        return;
    }
    super::schedule::load_new_channels(bot.clone(), guild);
}
