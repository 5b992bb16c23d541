//! Finding what to load in a guild: its channels, their threads (active,
//! archived public, archived private where the bot may list them), and which
//! of them the bot may read, decided from roles and overwrites before any
//! message request is made.

use crate::discord::model::{channel_type, Channel, Raw};
use crate::discord::{ApiError, Client};
use crate::permissions::{self, GuildPermissions, Overwrite};

/// A channel or thread whose history may be loaded.
#[derive(Debug, Clone)]
pub struct ChannelToLoad {
    pub guild_id: u64,
    pub channel_id: u64,
    pub name: String,
    pub kind: u8,
    pub parent_id: Option<u64>,
    pub last_message_id: Option<u64>,
    /// Why the bot may not read it, decided from permissions; `None` = readable.
    pub forbidden: Option<String>,
}

/// What discovery found in one guild.
#[derive(Debug)]
pub struct Discovery {
    /// Every channel and thread, for the store.
    pub channels: Vec<Raw<Channel>>,
    /// Message-holding channels and threads, in listing order.
    pub targets: Vec<ChannelToLoad>,
    /// Things that could not be listed, in words for the summary.
    pub notes: Vec<String>,
}

/// Lists a guild's channels and threads. `bot` is the bot's user id, `roles`
/// its roles in the guild. When every channel in `wanted` (non-empty) is
/// among the channels and active threads, archived threads are not listed:
/// a new thread or channel costs two requests, not a walk of every archive.
pub async fn discover(
    client: &Client,
    perms: &GuildPermissions,
    bot: u64,
    roles: &[u64],
    wanted: &[u64],
) -> Result<Discovery, ApiError> {
    let guild_id = perms.guild_id;
    let mut channels = client.guild_channels(guild_id).await?;
    let mut notes = Vec::new();
    let overwrites_of = |channels: &[Raw<Channel>], id: u64| -> Vec<Overwrite> {
        channels.iter().find(|c| c.value.id == id).map(|c| c.value.permission_overwrites.clone()).unwrap_or_default()
    };
    let mut threads = match client.active_threads(guild_id).await {
        Ok(list) => list.threads,
        Err(e) if e.is_fatal() => return Err(e),
        Err(e) => {
            notes.push(format!("active threads could not be listed: {e}"));
            Vec::new()
        }
    };
    let listed = |id: u64| channels.iter().chain(threads.iter()).any(|c| c.value.id == id);
    let list_archived = wanted.is_empty() || !wanted.iter().all(|&w| listed(w));
    let parents: Vec<&Raw<Channel>> = if list_archived {
        channels.iter().filter(|c| channel_type::holds_threads(c.value.kind)).collect()
    } else {
        Vec::new()
    };
    for parent in parents {
        let p = &parent.value;
        let label = format!("#{}", p.name.as_deref().unwrap_or("?"));
        let allowed = perms.in_channel(bot, roles, &p.permission_overwrites);
        if !permissions::can_read_history(allowed) {
            continue;
        }
        let mut kinds = vec![false];
        if p.kind == channel_type::GUILD_TEXT {
            if allowed & permissions::MANAGE_THREADS != 0 {
                kinds.push(true);
            } else {
                notes.push(format!("archived private threads of {label} not listed: the bot lacks Manage Threads"));
            }
        }
        'kinds: for private in kinds {
            let mut before: Option<String> = None;
            loop {
                let page = match client.archived_threads(p.id, private, before.as_deref()).await {
                    Ok(page) => page,
                    Err(e) if e.is_fatal() => return Err(e),
                    Err(e @ (ApiError::Forbidden { .. } | ApiError::NotFound { .. })) => {
                        // The channel itself is unreadable or gone: its load will say
                        // so; asking again for private threads would only add an
                        // invalid request.
                        notes.push(format!("threads of {label} not listed: {e}"));
                        break 'kinds;
                    }
                    Err(e) => {
                        let which = if private { "private" } else { "public" };
                        notes.push(format!("archived {which} threads of {label} not listed: {e}"));
                        break;
                    }
                };
                let next = page
                    .threads
                    .last()
                    .and_then(|t| t.value.thread_metadata.as_ref())
                    .and_then(|m| m.archive_timestamp.clone());
                let got = page.threads.len();
                threads.extend(page.threads);
                match next {
                    Some(next) if page.has_more && got > 0 && before.as_deref() != Some(next.as_str()) => {
                        before = Some(next)
                    }
                    _ => break,
                }
            }
        }
    }
    // A thread may be both active and (after a race) archived: keep one.
    threads.sort_by_key(|t| t.value.id);
    threads.dedup_by_key(|t| t.value.id);
    let mut targets = Vec::new();
    for ch in channels.iter().chain(threads.iter()) {
        let c = &ch.value;
        if !channel_type::holds_messages(c.kind) {
            continue;
        }
        let overwrites = if channel_type::is_thread(c.kind) {
            c.parent_id.map(|p| overwrites_of(&channels, p)).unwrap_or_default()
        } else {
            c.permission_overwrites.clone()
        };
        let allowed = perms.in_channel(bot, roles, &overwrites);
        let forbidden = if allowed & permissions::VIEW_CHANNEL == 0 {
            Some("the bot lacks View Channel".to_owned())
        } else if allowed & permissions::READ_MESSAGE_HISTORY == 0 {
            Some("the bot lacks Read Message History".to_owned())
        } else {
            None
        };
        targets.push(ChannelToLoad {
            guild_id,
            channel_id: c.id,
            name: c.name.clone().unwrap_or_default(),
            kind: c.kind,
            parent_id: c.parent_id,
            last_message_id: c.last_message_id,
            forbidden,
        });
    }
    channels.extend(threads);
    Ok(Discovery { channels, targets, notes })
}
