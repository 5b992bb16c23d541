//! Discord's permission algorithm: who may see which channel.
//!
//! Stage one uses it to skip channels the bot may not read *before* asking
//! (a 403 counts against Discord's invalid-request budget, and a channel without
//! Read Message History answers `[]`, which would look like an empty channel).
//! Search uses the same code to decide what a user may be shown.
//!
//! The algorithm follows Discord's "Permission Overwrites" documentation:
//! 1. base = @everyone's permissions | every role of the member; the guild owner
//!    and holders of ADMINISTRATOR get everything;
//! 2. then the channel's overwrites: @everyone (deny, then allow), the member's
//!    roles combined (deny all, then allow all), the member's own (deny, allow).

use std::collections::HashMap;

pub const ADMINISTRATOR: u64 = 1 << 3;
pub const MANAGE_GUILD: u64 = 1 << 5;
pub const VIEW_CHANNEL: u64 = 1 << 10;
pub const READ_MESSAGE_HISTORY: u64 = 1 << 16;
pub const MANAGE_THREADS: u64 = 1 << 34;
/// Every permission bit.
pub const ALL: u64 = u64::MAX;

/// Who an overwrite applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OverwriteKind {
    Role,
    Member,
}

/// One entry of a channel's `permission_overwrites`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overwrite {
    pub id: u64,
    pub kind: OverwriteKind,
    pub allow: u64,
    pub deny: u64,
}

/// What a guild contributes to every permission decision: its id (which is
/// also the @everyone role's id), its owner and each role's permissions.
#[derive(Debug, Clone, Default)]
pub struct GuildPermissions {
    pub guild_id: u64,
    pub owner_id: u64,
    pub roles: HashMap<u64, u64>,
}

impl GuildPermissions {
    /// Guild-wide permissions of a member (step 1).
    pub fn base(&self, user_id: u64, member_roles: &[u64]) -> u64 {
        if user_id == self.owner_id {
            return ALL;
        }
        let mut perms = self.roles.get(&self.guild_id).copied().unwrap_or(0);
        for role in member_roles {
            perms |= self.roles.get(role).copied().unwrap_or(0);
        }
        if perms & ADMINISTRATOR != 0 {
            ALL
        } else {
            perms
        }
    }

    /// A member's permissions in a channel with these overwrites (steps 1 and 2).
    /// Threads pass their parent channel's overwrites.
    pub fn in_channel(&self, user_id: u64, member_roles: &[u64], overwrites: &[Overwrite]) -> u64 {
        let mut perms = self.base(user_id, member_roles);
        if perms == ALL {
            return ALL;
        }
        if let Some(everyone) = overwrites.iter().find(|o| o.kind == OverwriteKind::Role && o.id == self.guild_id) {
            perms = (perms & !everyone.deny) | everyone.allow;
        }
        let (mut allow, mut deny) = (0, 0);
        for o in overwrites {
            if o.kind == OverwriteKind::Role && o.id != self.guild_id && member_roles.contains(&o.id) {
                allow |= o.allow;
                deny |= o.deny;
            }
        }
        perms = (perms & !deny) | allow;
        if let Some(own) = overwrites.iter().find(|o| o.kind == OverwriteKind::Member && o.id == user_id) {
            perms = (perms & !own.deny) | own.allow;
        }
        perms
    }
}

/// Whether these channel permissions allow reading the channel's history.
pub fn can_read_history(perms: u64) -> bool {
    perms & VIEW_CHANNEL != 0 && perms & READ_MESSAGE_HISTORY != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUILD: u64 = 100;
    const MOD: u64 = 200;
    const MUTED: u64 = 300;
    const ADMIN: u64 = 400;
    const READ: u64 = VIEW_CHANNEL | READ_MESSAGE_HISTORY;

    fn guild() -> GuildPermissions {
        GuildPermissions {
            guild_id: GUILD,
            owner_id: 1,
            roles: HashMap::from([(GUILD, READ), (MOD, MANAGE_THREADS), (MUTED, 0), (ADMIN, ADMINISTRATOR)]),
        }
    }

    fn role(id: u64, allow: u64, deny: u64) -> Overwrite {
        Overwrite { id, kind: OverwriteKind::Role, allow, deny }
    }

    fn member(id: u64, allow: u64, deny: u64) -> Overwrite {
        Overwrite { id, kind: OverwriteKind::Member, allow, deny }
    }

    #[test]
    fn everyone_reads_a_plain_channel() {
        assert!(can_read_history(guild().in_channel(7, &[], &[])));
    }

    #[test]
    fn everyone_deny_hides_unless_a_role_allows() {
        let o = [role(GUILD, 0, VIEW_CHANNEL), role(MOD, VIEW_CHANNEL, 0)];
        assert!(!can_read_history(guild().in_channel(7, &[], &o)));
        assert!(can_read_history(guild().in_channel(7, &[MOD], &o)));
    }

    #[test]
    fn role_allow_beats_role_deny_and_member_overwrite_beats_both() {
        // One role denies, another allows: allow wins (roles are combined).
        let o = [role(MUTED, 0, VIEW_CHANNEL), role(MOD, VIEW_CHANNEL, 0)];
        assert!(can_read_history(guild().in_channel(7, &[MUTED, MOD], &o)));
        // The member's own deny wins over any role allow.
        let o = [role(MOD, VIEW_CHANNEL, 0), member(7, 0, VIEW_CHANNEL)];
        assert!(!can_read_history(guild().in_channel(7, &[MOD], &o)));
        // And the member's own allow wins over @everyone's deny.
        let o = [role(GUILD, 0, VIEW_CHANNEL), member(7, VIEW_CHANNEL, 0)];
        assert!(can_read_history(guild().in_channel(7, &[], &o)));
    }

    #[test]
    fn history_is_separate_from_view() {
        let o = [role(GUILD, 0, READ_MESSAGE_HISTORY)];
        let p = guild().in_channel(7, &[], &o);
        assert!(p & VIEW_CHANNEL != 0);
        assert!(!can_read_history(p));
    }

    #[test]
    fn owner_and_administrator_see_everything() {
        let o = [role(GUILD, 0, VIEW_CHANNEL), member(1, 0, VIEW_CHANNEL), member(8, 0, VIEW_CHANNEL)];
        assert_eq!(guild().in_channel(1, &[], &o), ALL);
        assert_eq!(guild().in_channel(8, &[ADMIN], &o), ALL);
    }

    #[test]
    fn overwrites_for_roles_the_member_lacks_do_not_apply() {
        let o = [role(MUTED, 0, VIEW_CHANNEL)];
        assert!(can_read_history(guild().in_channel(7, &[MOD], &o)));
    }
}
