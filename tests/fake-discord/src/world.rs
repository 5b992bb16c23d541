//! The fake server's data: a generated guild whose every message is known, so
//! tests can compare what the loader stored against the ground truth.
//!
//! Message text is generated from the message id on demand (a 1M-message
//! channel costs ~40 bytes a message here), unless a test or a live edit set it.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use discord_indexer::discord::model::channel_type::*;
use discord_indexer::permissions::{
    Overwrite, OverwriteKind, ADMINISTRATOR, MANAGE_THREADS, READ_MESSAGE_HISTORY, VIEW_CHANNEL,
};
use discord_indexer::snowflake;

/// @everyone's default permissions in generated guilds: view, send, read history, and more.
pub const EVERYONE_PERMISSIONS: u64 = VIEW_CHANNEL | READ_MESSAGE_HISTORY | (1 << 11) | (1 << 6);

/// How a channel answers reads, beside what its overwrites say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    /// 403 Missing Access (50001) on every read.
    Forbidden,
    /// 404 Unknown Channel (10003): deleted after it was listed.
    Gone,
}

#[derive(Debug, Clone)]
pub struct FakeUser {
    pub id: u64,
    pub username: String,
    pub global_name: Option<String>,
    pub bot: bool,
}

#[derive(Debug, Clone)]
pub struct FakeRole {
    pub id: u64,
    pub name: String,
    pub permissions: u64,
    pub position: i64,
}

#[derive(Debug, Clone)]
pub struct FakeMessage {
    pub id: u64,
    /// Index into [`World::users`].
    pub author: u32,
    pub kind: u8,
    pub reply_to: Option<u64>,
    pub edited_ms: Option<u64>,
    /// Set text; `None` means the text generated from the id.
    pub content: Option<String>,
    pub attachments: u8,
    pub reactions: u8,
    pub webhook: bool,
}

#[derive(Debug, Clone)]
pub struct FakeChannel {
    pub id: u64,
    pub kind: u8,
    pub parent_id: Option<u64>,
    pub name: String,
    pub topic: Option<String>,
    pub position: i64,
    pub overwrites: Vec<Overwrite>,
    pub access: Access,
    /// Threads: archived, and when.
    pub archived_at_ms: Option<u64>,
    pub owner_id: Option<u64>,
    /// Threads: the users who joined (who may see a private thread without Manage Threads).
    pub members: Vec<u64>,
    /// Sorted by id, oldest first.
    pub messages: Vec<FakeMessage>,
}

impl FakeChannel {
    /// An open channel without history (text channels get a topic).
    pub fn new(id: u64, kind: u8, parent_id: Option<u64>, name: &str, position: i64) -> FakeChannel {
        FakeChannel {
            id,
            kind,
            parent_id,
            name: name.into(),
            topic: (kind == GUILD_TEXT).then(|| format!("All about {name}")),
            position,
            overwrites: Vec::new(),
            access: Access::Open,
            archived_at_ms: None,
            owner_id: None,
            members: Vec::new(),
            messages: Vec::new(),
        }
    }

    pub fn is_thread(&self) -> bool {
        is_thread(self.kind)
    }

    pub fn last_message_id(&self) -> Option<u64> {
        self.messages.last().map(|m| m.id)
    }

    pub fn find(&self, id: u64) -> Option<&FakeMessage> {
        self.messages.binary_search_by_key(&id, |m| m.id).ok().map(|i| &self.messages[i])
    }
}

#[derive(Debug, Clone)]
pub struct FakeGuild {
    pub id: u64,
    pub name: String,
    pub owner_id: u64,
    pub roles: Vec<FakeRole>,
    /// user id → role ids
    pub members: HashMap<u64, Vec<u64>>,
    pub channels: Vec<FakeChannel>,
}

impl FakeGuild {
    pub fn channel(&self, id: u64) -> Option<&FakeChannel> {
        self.channels.iter().find(|c| c.id == id)
    }

    pub fn channel_mut(&mut self, id: u64) -> Option<&mut FakeChannel> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    pub fn channel_named(&self, name: &str) -> &FakeChannel {
        self.channels.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no channel {name}"))
    }
}

/// Everything the fake server knows.
#[derive(Debug, Clone)]
pub struct World {
    pub token: String,
    pub bot_user: u32,
    pub application_id: u64,
    /// Application flags; without bit 18 or 19 message content comes back empty.
    pub app_flags: u64,
    pub users: Vec<FakeUser>,
    pub guilds: Vec<FakeGuild>,
    next_seq: u64,
    /// How attachment links are written and checked (the serving server sets them).
    pub(crate) links: crate::cdn::Links,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    pub seed: u64,
    /// Plain text channels with history ("general", "help", "dev-0", ...).
    pub text_channels: usize,
    /// Messages per text channel (threads and extras get fewer).
    pub messages_per_channel: usize,
    /// Add the full cast: announcement, voice chat, forum posts, active, archived
    /// and private threads, and the channels the bot may not read.
    pub extras: bool,
    pub humans: usize,
}

impl WorldSpec {
    /// A guild with every kind of channel, a few thousand messages in all.
    pub fn standard() -> Self {
        WorldSpec { seed: 7, text_channels: 3, messages_per_channel: 700, extras: true, humans: 12 }
    }

    /// Only plain text channels: for benchmarks.
    pub fn plain(channels: usize, messages: usize) -> Self {
        WorldSpec { seed: 7, text_channels: channels, messages_per_channel: messages, extras: false, humans: 12 }
    }
}

/// The bot's application flags with the MESSAGE_CONTENT intent granted (limited).
pub const APP_FLAGS_WITH_CONTENT: u64 = 1 << 19;

const GUILD_EPOCH: &str = "2021-03-01T00:00:00Z";
const HISTORY_END: &str = "2026-10-01T00:00:00Z";

impl World {
    pub(super) fn next_id(&mut self, ms: u64) -> u64 {
        self.next_seq += 1;
        (ms << 22) | (self.next_seq & 0x3F_FFFF)
    }

    pub fn bot(&self) -> &FakeUser {
        &self.users[self.bot_user as usize]
    }

    pub fn guild(&self, id: u64) -> Option<&FakeGuild> {
        self.guilds.iter().find(|g| g.id == id)
    }

    pub fn guild_mut(&mut self, id: u64) -> Option<&mut FakeGuild> {
        self.guilds.iter_mut().find(|g| g.id == id)
    }

    /// The channel or thread with this id, and its guild.
    pub fn channel(&self, id: u64) -> Option<(&FakeGuild, &FakeChannel)> {
        self.guilds.iter().find_map(|g| g.channel(id).map(|c| (g, c)))
    }

    pub fn channel_mut(&mut self, id: u64) -> Option<&mut FakeChannel> {
        self.guilds.iter_mut().find_map(|g| g.channel_mut(id))
    }

    /// The text of a message as the server would send it (ignoring the intent).
    pub fn content(&self, m: &FakeMessage) -> String {
        match &m.content {
            Some(c) => c.clone(),
            None => generated_text(m, &self.users[m.author as usize]),
        }
    }

    /// Builds a world from a spec; the same spec always gives the same world.
    pub fn generate(spec: &WorldSpec) -> World {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let start = ms_of(GUILD_EPOCH);
        let mut world = World {
            token: format!("fake.{:016x}.token", spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            bot_user: 0,
            application_id: 0,
            app_flags: APP_FLAGS_WITH_CONTENT,
            users: Vec::new(),
            guilds: Vec::new(),
            next_seq: 0,
            links: crate::cdn::Links::unserved(spec.seed),
        };
        world.application_id = world.next_id(start);
        let bot_id = world.application_id;
        world.users.push(FakeUser { id: bot_id, username: "indexer".into(), global_name: None, bot: true });
        for i in 0..spec.humans {
            let id = world.next_id(start);
            let (user, display) = PEOPLE[i % PEOPLE.len()];
            let suffix = if i >= PEOPLE.len() { format!("{}", i / PEOPLE.len()) } else { String::new() };
            world.users.push(FakeUser {
                id,
                username: format!("{user}{suffix}"),
                global_name: Some(format!("{display}{suffix}")),
                bot: false,
            });
        }
        for name in ["helperbot", "ci-bot"] {
            let id = world.next_id(start);
            world.users.push(FakeUser { id, username: name.into(), global_name: None, bot: true });
        }
        let guild_id = world.next_id(start);
        let bots_role = world.next_id(start);
        let mods_role = world.next_id(start);
        let admins_role = world.next_id(start);
        let owner_id = world.users[1].id;
        let roles = vec![
            FakeRole { id: guild_id, name: "@everyone".into(), permissions: EVERYONE_PERMISSIONS, position: 0 },
            FakeRole {
                id: bots_role,
                name: "Bots".into(),
                permissions: EVERYONE_PERMISSIONS | MANAGE_THREADS,
                position: 1,
            },
            FakeRole {
                id: mods_role,
                name: "Moderators".into(),
                permissions: EVERYONE_PERMISSIONS | MANAGE_THREADS,
                position: 2,
            },
            FakeRole { id: admins_role, name: "Admins".into(), permissions: ADMINISTRATOR, position: 3 },
        ];
        let mut members = HashMap::new();
        members.insert(bot_id, vec![bots_role]);
        for (i, u) in world.users.iter().enumerate().skip(1) {
            let roles = match i {
                2 => vec![mods_role],
                3 => vec![admins_role],
                _ if u.bot => vec![bots_role],
                _ => vec![],
            };
            members.insert(u.id, roles);
        }
        let mut guild =
            FakeGuild { id: guild_id, name: "Fake Guild".into(), owner_id, roles, members, channels: Vec::new() };
        let mut gen = Gen { world: &mut world, rng: &mut rng, end: ms_of(HISTORY_END) };

        let category = gen.channel(GUILD_CATEGORY, None, "Text", 0, start);
        guild.channels.push(category.clone());
        let n = spec.messages_per_channel;
        for i in 0..spec.text_channels {
            let name = match i {
                0 => "general".to_string(),
                1 => "help".to_string(),
                _ => format!("dev-{}", i - 2),
            };
            let mut ch = gen.channel(GUILD_TEXT, Some(category.id), &name, i as i64 + 1, start);
            gen.fill(&mut ch, n, start);
            guild.channels.push(ch);
        }
        if spec.extras {
            let general = guild.channels[1].id;
            let mut ann = gen.channel(GUILD_ANNOUNCEMENT, Some(category.id), "announcements", 10, start);
            gen.fill(&mut ann, n / 10 + 5, start);
            let mut voice = gen.channel(GUILD_VOICE, None, "Lounge", 11, start);
            gen.fill(&mut voice, n / 7 + 3, start);
            let forum = gen.channel(GUILD_FORUM, None, "questions", 12, start);
            // Threads: two active public, three archived public, one active and
            // one archived private, four forum posts (one archived).
            let mut threads = Vec::new();
            for (parent, kind, name, archived, count) in [
                (general, PUBLIC_THREAD, "release planning", false, n / 5),
                (general, PUBLIC_THREAD, "build failures", false, n / 6),
                (general, PUBLIC_THREAD, "old migration", true, n / 4),
                (general, PUBLIC_THREAD, "q3 retro", true, n / 8),
                (general, PUBLIC_THREAD, "tiny archived", true, 3),
                (general, PRIVATE_THREAD, "mods only", false, n / 9),
                (general, PRIVATE_THREAD, "incident 42", true, n / 9),
                (forum.id, PUBLIC_THREAD, "How do I rotate keys?", false, 25),
                (forum.id, PUBLIC_THREAD, "Install fails on ARM", false, 14),
                (forum.id, PUBLIC_THREAD, "Feature request: dark mode", false, 9),
                (forum.id, PUBLIC_THREAD, "Old question", true, 6),
            ] {
                let born = gen.rng.gen_range(start..start + (gen.end - start) / 2);
                let mut t = gen.channel(kind, Some(parent), name, 0, born);
                t.owner_id = Some(gen.world.users[1 + gen.rng.gen_range(0..spec.humans)].id);
                t.members = vec![t.owner_id.unwrap_or_default(), bot_id];
                // A thread's first message has the thread's id (forum posts, starter messages).
                let first = Some(t.id);
                gen.fill_from(&mut t, count.max(1), born, first);
                if archived {
                    t.archived_at_ms = Some(t.messages.last().map_or(born, |m| m.id >> 22) + 86_400_000);
                }
                threads.push(t);
            }
            // Channels the bot may not read. "secret": overwrites hide it from
            // @everyone and the bot's role (the loader must not even ask).
            // "stale-perms": overwrites say readable, but Discord says 403.
            // "deleted": listed, then 404. "no-history": visible without Read
            // Message History (Discord would answer `[]`).
            let mut secret = gen.channel(GUILD_TEXT, Some(category.id), "secret", 20, start);
            secret.overwrites = vec![
                role_overwrite(guild_id, 0, VIEW_CHANNEL),
                role_overwrite(bots_role, 0, VIEW_CHANNEL),
                role_overwrite(mods_role, VIEW_CHANNEL, 0),
            ];
            secret.access = Access::Forbidden;
            gen.fill(&mut secret, 40, start);
            let mut stale = gen.channel(GUILD_TEXT, Some(category.id), "stale-perms", 21, start);
            stale.access = Access::Forbidden;
            gen.fill(&mut stale, 30, start);
            let mut deleted = gen.channel(GUILD_TEXT, Some(category.id), "deleted", 22, start);
            deleted.access = Access::Gone;
            gen.fill(&mut deleted, 30, start);
            let mut no_history = gen.channel(GUILD_TEXT, Some(category.id), "no-history", 23, start);
            no_history.overwrites = vec![
                role_overwrite(guild_id, 0, READ_MESSAGE_HISTORY),
                role_overwrite(bots_role, 0, READ_MESSAGE_HISTORY),
            ];
            gen.fill(&mut no_history, 30, start);
            guild.channels.extend([ann, voice, forum, secret, stale, deleted, no_history]);
            guild.channels.extend(threads);
        }
        world.guilds.push(guild);
        world
    }
}

/// The users of each kind that [`World::add_access_matrix`] sets up.
#[derive(Debug, Clone, Copy)]
pub struct AccessCast {
    /// Owns the guild: reads everything.
    pub owner: u64,
    /// Has the Administrator role: reads everything.
    pub admin: u64,
    /// Has Manage Threads: every private thread of channels they see.
    pub moderator: u64,
    /// Has the Staff role: staff-room (and its thread) and history-hidden.
    pub staff: u64,
    /// A member overwrite hides not-for-denied from them.
    pub denied: u64,
    /// A member of the private thread "private plans".
    pub thread_member: u64,
    /// No roles.
    pub plain: u64,
    /// Not a member of the guild.
    pub outsider: u64,
}

impl World {
    /// Adds to the first guild what a permission test needs: a Staff role,
    /// role-gated, member-denied, admin-only and history-hidden channels, a
    /// thread of a gated channel, a private thread with one human member, and
    /// a user of each kind. The bot may read all of it.
    pub fn add_access_matrix(&mut self) -> AccessCast {
        let start = ms_of(GUILD_EPOCH);
        let mut rng = StdRng::seed_from_u64(99);
        let staff_role = self.next_id(start);
        let outsider = self.next_id(start);
        self.users.push(FakeUser { id: outsider, username: "outsider".into(), global_name: None, bot: false });
        let user = |i: usize| self.users[i].id;
        let cast = AccessCast {
            owner: user(1),
            moderator: user(2),
            admin: user(3),
            staff: user(4),
            denied: user(5),
            thread_member: user(6),
            plain: user(7),
            outsider,
        };
        let guild = &self.guilds[0];
        let (guild_id, bots_role) = (guild.id, guild.roles.iter().find(|r| r.name == "Bots").expect("bots role").id);
        let general = guild.channel_named("general").id;
        let category = guild.channels.iter().find(|c| c.kind == GUILD_CATEGORY).map(|c| c.id);
        let bot_id = self.bot().id;
        let member = |id: u64, allow: u64, deny: u64| Overwrite { id, kind: OverwriteKind::Member, allow, deny };

        let mut gen = Gen { world: self, rng: &mut rng, end: ms_of(HISTORY_END) };
        let mut channels = Vec::new();
        let text = |gen: &mut Gen, name: &str, overwrites: Vec<Overwrite>| {
            let mut c = gen.channel(GUILD_TEXT, category, name, 30, start);
            c.overwrites = overwrites;
            gen.fill(&mut c, 60, start);
            c
        };
        let staff_room = text(
            &mut gen,
            "staff-room",
            vec![
                role_overwrite(guild_id, 0, VIEW_CHANNEL),
                role_overwrite(staff_role, VIEW_CHANNEL, 0),
                role_overwrite(bots_role, VIEW_CHANNEL, 0),
            ],
        );
        let mut staff_thread = gen.channel(PUBLIC_THREAD, Some(staff_room.id), "staff chat", 0, start);
        let first = Some(staff_thread.id);
        gen.fill_from(&mut staff_thread, 30, start, first);
        let mut private = gen.channel(PRIVATE_THREAD, Some(general), "private plans", 0, start);
        private.owner_id = Some(cast.thread_member);
        private.members = vec![cast.thread_member, bot_id];
        let first = Some(private.id);
        gen.fill_from(&mut private, 30, start, first);
        channels.push(text(&mut gen, "not-for-denied", vec![member(cast.denied, 0, VIEW_CHANNEL)]));
        channels.push(text(
            &mut gen,
            "admins-only",
            vec![role_overwrite(guild_id, 0, VIEW_CHANNEL), role_overwrite(bots_role, VIEW_CHANNEL, 0)],
        ));
        channels.push(text(
            &mut gen,
            "history-hidden",
            vec![
                role_overwrite(guild_id, 0, READ_MESSAGE_HISTORY),
                role_overwrite(staff_role, READ_MESSAGE_HISTORY, 0),
                role_overwrite(bots_role, READ_MESSAGE_HISTORY, 0),
            ],
        ));
        channels.extend([staff_room, staff_thread, private]);

        let guild = &mut self.guilds[0];
        // The other private threads: only the owner (who sees everything anyway) and the bot joined.
        for t in guild.channels.iter_mut().filter(|c| c.kind == PRIVATE_THREAD) {
            t.owner_id = Some(cast.owner);
            t.members = vec![cast.owner, bot_id];
        }
        guild.roles.push(FakeRole {
            id: staff_role,
            name: "Staff".into(),
            permissions: EVERYONE_PERMISSIONS,
            position: 4,
        });
        guild.members.insert(cast.staff, vec![staff_role]);
        guild.members.remove(&outsider);
        guild.channels.extend(channels);
        cast
    }

    /// Adds `other`'s first guild as a second guild of this world, with the
    /// same people in it (worlds generate the same users) and fresh ids for
    /// the guild, its roles, channels and messages.
    pub fn add_guild_from(&mut self, other: World) -> u64 {
        // Generated ids carry a sequence number far below 2^21 in their low
        // bits: setting bit 21 gives ids no generated world uses.
        const FRESH: u64 = 1 << 21;
        let users: std::collections::HashSet<u64> = self.users.iter().map(|u| u.id).collect();
        let mut g = other.guilds.into_iter().next().expect("a generated world has a guild");
        let remap = |id: u64| if users.contains(&id) { id } else { id | FRESH };
        g.id = remap(g.id);
        g.name = format!("{} (2)", g.name);
        for r in &mut g.roles {
            r.id = remap(r.id);
        }
        g.members = g.members.into_iter().map(|(u, roles)| (u, roles.into_iter().map(remap).collect())).collect();
        for c in &mut g.channels {
            c.id = remap(c.id);
            c.parent_id = c.parent_id.map(remap);
            for o in &mut c.overwrites {
                if o.kind == OverwriteKind::Role {
                    o.id = remap(o.id);
                }
            }
            for m in &mut c.messages {
                m.id = remap(m.id);
                m.reply_to = m.reply_to.map(remap);
            }
        }
        let id = g.id;
        self.guilds.push(g);
        id
    }

    /// Adds a text channel to the first guild holding these conversations
    /// (each a list of (user index, text)), two days apart, messages 40 s
    /// apart. Returns the channel id and each conversation's message ids.
    pub fn add_conversations(
        &mut self,
        name: &str,
        start_rfc3339: &str,
        conversations: &[Vec<(usize, String)>],
    ) -> (u64, Vec<Vec<u64>>) {
        let start = ms_of(start_rfc3339);
        let category = self.guilds[0].channels.iter().find(|c| c.kind == GUILD_CATEGORY).map(|c| c.id);
        let id = self.next_id(start);
        let mut ch = FakeChannel::new(id, GUILD_TEXT, category, name, 40);
        let mut ids = Vec::new();
        for (i, conversation) in conversations.iter().enumerate() {
            let mut these = Vec::new();
            for (j, (author, text)) in conversation.iter().enumerate() {
                let at = start + 60_000 + i as u64 * 2 * 86_400_000 + j as u64 * 40_000;
                let id = self.next_id(at);
                these.push(id);
                ch.messages.push(FakeMessage {
                    id,
                    author: (*author).clamp(1, self.users.len() - 1) as u32,
                    kind: 0,
                    reply_to: None,
                    edited_ms: None,
                    content: Some(text.clone()),
                    attachments: 0,
                    reactions: 0,
                    webhook: false,
                });
            }
            ids.push(these);
        }
        self.guilds[0].channels.push(ch);
        (id, ids)
    }
}

fn role_overwrite(id: u64, allow: u64, deny: u64) -> Overwrite {
    Overwrite { id, kind: OverwriteKind::Role, allow, deny }
}

fn ms_of(rfc3339: &str) -> u64 {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("valid constant");
    t.timestamp_millis() as u64 - snowflake::DISCORD_EPOCH_MS
}

struct Gen<'a> {
    world: &'a mut World,
    rng: &'a mut StdRng,
    /// Discord-epoch ms at which generated history ends.
    end: u64,
}

impl Gen<'_> {
    fn channel(&mut self, kind: u8, parent_id: Option<u64>, name: &str, position: i64, at: u64) -> FakeChannel {
        FakeChannel::new(self.world.next_id(at), kind, parent_id, name, position)
    }

    fn fill(&mut self, ch: &mut FakeChannel, count: usize, from: u64) {
        self.fill_from(ch, count, from, None)
    }

    /// Appends `count` messages spread over the time from `from` to the end of
    /// history, as conversations (about a dozen messages, a few seconds to two
    /// minutes apart) separated by silences of hours or days.
    fn fill_from(&mut self, ch: &mut FakeChannel, count: usize, from: u64, first_id: Option<u64>) {
        const CONVERSATION: u64 = 12;
        let humans = (self.world.users.len() - 3).max(1) as u32;
        let span = self.end.saturating_sub(from).max(count as u64);
        let conversations = (count as u64 / CONVERSATION).max(1);
        let silence = (span / conversations).max(2);
        let mut t = from;
        for i in 0..count {
            let gap = if self.rng.gen_bool(1.0 / CONVERSATION as f64) {
                self.rng.gen_range(silence / 2..=silence * 3 / 2)
            } else {
                self.rng.gen_range(3_000..=120_000)
            };
            t = (t + gap).min(self.end + i as u64);
            let id = match (i, first_id) {
                (0, Some(id)) => id,
                _ => self.world.next_id(t),
            };
            let roll: f64 = self.rng.gen();
            let (author, kind, webhook) = if roll < 0.06 {
                // a bot (helperbot or ci-bot)
                (self.world.users.len() as u32 - 1 - self.rng.gen_range(0..2), 0, false)
            } else if roll < 0.07 {
                (1 + self.rng.gen_range(0..humans), 7, false) // member joined
            } else if roll < 0.075 {
                (self.world.users.len() as u32 - 1, 0, true) // webhook post
            } else {
                (1 + self.rng.gen_range(0..humans), 0, false)
            };
            let reply_to = (i > 2 && kind == 0 && self.rng.gen_bool(0.15))
                .then(|| ch.messages[i - self.rng.gen_range(1..=3.min(i))].id);
            let edited_ms = self.rng.gen_bool(0.05).then(|| (id >> 22) + self.rng.gen_range(1_000..600_000));
            ch.messages.push(FakeMessage {
                id,
                author,
                kind: if reply_to.is_some() { 19 } else { kind },
                reply_to,
                edited_ms,
                content: None,
                attachments: u8::from(self.rng.gen_bool(0.03)),
                reactions: if self.rng.gen_bool(0.1) { self.rng.gen_range(1..4) } else { 0 },
                webhook,
            });
        }
        ch.messages.sort_by_key(|m| m.id);
    }
}

const PEOPLE: &[(&str, &str)] = &[
    ("alice", "Alice"),
    ("bob_builds", "Bob"),
    ("carol.ops", "Carol"),
    ("dmitri", "Dmitri"),
    ("eve", "Eve"),
    ("farah", "Farah"),
    ("gus", "Gus"),
    ("hiroko", "Hiroko"),
    ("ines", "Inês"),
    ("jamal", "Jamal"),
    ("kofi", "Kofi"),
    ("lena", "Lena"),
];

const TOPICS: &[(&str, &[&str])] = &[
    ("deploy", &["the staging deploy", "the helm chart", "the rollout", "canary pods", "the release branch"]),
    ("keys", &["the notary keys", "key rotation", "the signing cert", "the vault token", "our TLS certificates"]),
    ("build", &["the ARM build", "cargo check", "the CI cache", "linker errors", "the nightly job"]),
    ("db", &["the Postgres replica", "the migration script", "slow queries", "the connection pool", "vacuum"]),
    ("ui", &["dark mode", "the settings page", "the mobile layout", "font rendering", "the onboarding flow"]),
    ("meet", &["the retro", "Thursday's sync", "the planning doc", "the offsite", "the on-call rota"]),
];

const OPENERS: &[&str] = &[
    "has anyone looked at {}?",
    "I think {} is broken again",
    "quick question about {}",
    "heads up: {} changed today",
    "how do we handle {} now?",
    "can someone review {}",
];
const REPLIES: &[&str] = &[
    "yes, {} needs a restart after the config change",
    "I fixed {} yesterday, pull main",
    "no idea, ask in #help about {}",
    "{} works for me on the latest version",
    "we moved {} to the new runbook",
    "let's put {} on the agenda",
    "I can take {}",
    "the logs for {} say timeout after 30s",
    "did you try clearing {}?",
];

/// Deterministic chat text for a generated message.
fn generated_text(m: &FakeMessage, author: &FakeUser) -> String {
    let h = m.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (m.id >> 29);
    if m.kind == 7 {
        return String::new();
    }
    if author.bot {
        return format!("build #{} finished: {} tests passed", h % 10_000, 100 + h % 900);
    }
    // Messages close in time share a topic, so conversations hang together.
    let topic = TOPICS[((m.id >> 22) / 3_600_000 % TOPICS.len() as u64) as usize];
    let subject = topic.1[(h >> 8) as usize % topic.1.len()];
    let template = if m.reply_to.is_some() || h.is_multiple_of(3) {
        REPLIES[(h >> 16) as usize % REPLIES.len()]
    } else {
        OPENERS[(h >> 16) as usize % OPENERS.len()]
    };
    template.replace("{}", subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_ids_are_unique_and_sorted() {
        let a = World::generate(&WorldSpec::standard());
        let b = World::generate(&WorldSpec::standard());
        let ids = |w: &World| -> Vec<u64> {
            w.guilds[0].channels.iter().flat_map(|c| c.messages.iter().map(|m| m.id)).collect()
        };
        assert_eq!(ids(&a), ids(&b));
        let mut all = ids(&a);
        let n = all.len();
        assert!(n > 3000, "{n}");
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        for c in &a.guilds[0].channels {
            assert!(c.messages.windows(2).all(|w| w[0].id < w[1].id));
            if c.is_thread() {
                assert_eq!(c.messages[0].id, c.id);
            }
        }
    }
}
