//! What a user may read: the set of a guild's channels and threads whose
//! history they can see right now, worked out with Discord's permission
//! algorithm (`crate::permissions`) from stored roles, overwrites and the
//! member's roles, each refreshed from Discord when older than the allowed age.
//!
//! The rule is "fail closed": if a fact cannot be established (Discord
//! unreachable and the stored copy too old, no token to ask with), the user
//! gets nothing from that guild and an error says why; a private thread whose
//! membership cannot be checked is left out, with a note.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;

use crate::discord::model::channel_type::{is_thread, PRIVATE_THREAD};
use crate::discord::{ApiError, Client};
use crate::permissions::{can_read_history, MANAGE_THREADS};
use crate::store::{GuildFacts, Store, StoreError};

/// Who is searching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// The operator of this archive: every stored channel.
    Operator,
    /// A Discord user: only what they may read.
    User(u64),
}

/// Channels a viewer may read in one guild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    /// Everything (the operator).
    All,
    /// These channels and threads (possibly none).
    Only(Vec<u64>),
}

impl Readable {
    /// The channels as a search filter: `None` means no filter (everything).
    pub fn channels(&self) -> Option<Vec<u64>> {
        match self {
            Readable::All => None,
            Readable::Only(c) => Some(c.clone()),
        }
    }

    /// Whether nothing at all may be read.
    pub fn is_nothing(&self) -> bool {
        matches!(self, Readable::Only(c) if c.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot tell what user {user} may read in guild {guild}: {reason}; showing nothing from it")]
    Undetermined { guild: u64, user: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where permission facts come from and how old they may be.
pub struct AccessSource<'a> {
    pub store: &'a Store,
    /// Discord, to refresh facts older than `max_age`; None: stored facts only.
    pub client: Option<&'a Client>,
    pub max_age: Duration,
}

/// The outcome for one guild: what may be read, and notes for the user.
#[derive(Debug, Clone)]
pub struct GuildReadable {
    pub readable: Readable,
    /// False when the viewer is not a member of the guild (nothing is readable).
    pub member: bool,
    pub notes: Vec<String>,
}

fn fresh(at: chrono::DateTime<Utc>, max_age: Duration) -> bool {
    Utc::now().signed_duration_since(at).to_std().is_ok_and(|age| age <= max_age)
}

impl AccessSource<'_> {
    /// What `viewer` may read in `guild`.
    pub async fn readable(&self, guild: u64, viewer: Viewer) -> Result<GuildReadable, AccessError> {
        let user = match viewer {
            Viewer::Operator => return Ok(GuildReadable { readable: Readable::All, member: true, notes: Vec::new() }),
            Viewer::User(u) => u,
        };
        let undetermined = |reason: String| AccessError::Undetermined { guild, user, reason };
        let mut notes = Vec::new();

        // 1. Roles and channel overwrites.
        let missing = || undetermined("the guild is not in the archive".into());
        let mut access = self.store.call(move |s| s.guild_access(guild)).await?.ok_or_else(missing)?;
        if !access.synced_at.is_some_and(|t| fresh(t, self.max_age)) {
            let client = self.client.ok_or_else(|| {
                undetermined(match access.synced_at {
                    Some(_) => {
                        "the stored roles and channel permissions are too old and no DISCORD_TOKEN is set to refresh them"
                            .into()
                    }
                    None => format!(
                        "its roles and channel permissions were never read from Discord (an export carries none);                          `discord-indexer load --guild {guild}` reads them, or set DISCORD_TOKEN; without --as-user                          the operator searches everything"
                    ),
                })
            })?;
            self.refresh_guild(client, guild)
                .await
                .map_err(|e| undetermined(format!("refreshing roles and channels failed: {e}")))?;
            access = self.store.call(move |s| s.guild_access(guild)).await?.ok_or_else(missing)?;
        }

        // 2. The member's roles.
        let roles = match self.store.call(move |s| s.member(guild, user)).await? {
            Some(m) if fresh(m.fetched_at, self.max_age) => m.roles,
            _ => {
                let client = self.client.ok_or_else(|| {
                    undetermined(
                        "the user's roles are not stored (or too old) and no DISCORD_TOKEN is set to read them".into(),
                    )
                })?;
                match client.guild_member(guild, user).await {
                    Ok(member) => {
                        let roles = member.roles.clone();
                        self.store.call(move |s| s.save_member(guild, user, Some(&roles))).await?;
                        Some(member.roles)
                    }
                    Err(ApiError::NotFound { .. }) => {
                        self.store.call(move |s| s.save_member(guild, user, None)).await?;
                        None
                    }
                    Err(e) => return Err(undetermined(format!("reading the user's roles failed: {e}"))),
                }
            }
        };
        let Some(roles) = roles else {
            notes.push(format!("user {user} is not a member of guild {guild}"));
            return Ok(GuildReadable { readable: Readable::Only(Vec::new()), member: false, notes });
        };

        // 3. Every channel; threads follow their parent.
        let perms = &access.permissions;
        let by_id: HashMap<u64, &crate::store::ChannelAccess> = access.channels.iter().map(|c| (c.id, c)).collect();
        let mut readable = Vec::new();
        let mut private_threads = Vec::new();
        let mut export_only = 0;
        for c in &access.channels {
            // Known only from an export: its overwrites are unknown (fail closed).
            if !c.listed_by_discord {
                export_only += 1;
                continue;
            }
            if !is_thread(c.kind) {
                if can_read_history(perms.in_channel(user, &roles, &c.overwrites)) {
                    readable.push(c.id);
                }
                continue;
            }
            // A thread whose parent is unknown cannot be judged: leave it out.
            let Some(parent) = c.parent_id.and_then(|p| by_id.get(&p)).filter(|p| p.listed_by_discord) else {
                continue;
            };
            let in_parent = perms.in_channel(user, &roles, &parent.overwrites);
            if !can_read_history(in_parent) {
                continue;
            }
            if c.kind == PRIVATE_THREAD && in_parent & MANAGE_THREADS == 0 {
                private_threads.push(c.id);
            } else {
                readable.push(c.id);
            }
        }

        if export_only > 0 {
            notes.push(format!(
                "{export_only} imported channel(s) in guild {guild} were left out: their permissions are unknown \
                 until `discord-indexer load` reads them from Discord"
            ));
        }

        // 4. Private threads: only for their members.
        let mut unchecked = 0;
        for thread in private_threads {
            match self.thread_membership(thread, user).await? {
                Some(true) => readable.push(thread),
                Some(false) => {}
                None => unchecked += 1,
            }
        }
        if unchecked > 0 {
            notes.push(format!(
                "{unchecked} private thread(s) in guild {guild} were left out: membership could not be checked"
            ));
        }
        readable.sort_unstable();
        Ok(GuildReadable { readable: Readable::Only(readable), member: true, notes })
    }

    async fn refresh_guild(&self, client: &Client, guild: u64) -> Result<(), anyhow::Error> {
        let g = client.guild(guild).await?;
        let channels = client.guild_channels(guild).await?;
        self.store
            .call(move |s| s.record_guild(&GuildFacts { guild: &g, channels: &channels, bot_member: None }))
            .await?;
        Ok(())
    }

    /// Some(is member), or None when it cannot be established.
    async fn thread_membership(&self, thread: u64, user: u64) -> Result<Option<bool>, StoreError> {
        if let Some((member, at)) = self.store.call(move |s| s.thread_member(thread, user)).await? {
            if fresh(at, self.max_age) {
                return Ok(Some(member));
            }
        }
        let Some(client) = self.client else { return Ok(None) };
        match client.is_thread_member(thread, user).await {
            Ok(member) => {
                self.store.call(move |s| s.save_thread_member(thread, user, member)).await?;
                Ok(Some(member))
            }
            Err(e) => {
                tracing::warn!(thread, user, error = %e, "cannot check private thread membership");
                Ok(None)
            }
        }
    }
}
