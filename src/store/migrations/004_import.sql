-- Imports of DiscordChatExporter files.

-- Where a channel row came from: 'discord' (listed by Discord, with its real
-- permission overwrites) or 'export' (known only from an export file, so who
-- may read it is unknown). Search shows 'export' channels to the operator
-- only, until a load lists the channel and the row becomes 'discord'.
ALTER TABLE channels ADD COLUMN source TEXT NOT NULL DEFAULT 'discord';
