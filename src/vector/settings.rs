//! The `[qdrant]` section of the config file: a Qdrant server (or cluster)
//! to use instead of the embedded store. The environment overrides it.

use crate::config::Secret;

/// The `[qdrant]` table as written.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantSection {
    url: Option<String>,
    api_key: Option<String>,
    replication_factor: Option<u32>,
    shard_number: Option<u32>,
    write_consistency_factor: Option<u32>,
    timeout_secs: Option<u64>,
    layout: Option<Layout>,
}

/// How a server's collections are cut: per guild, or shared by every guild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// A collection per (guild, model), `discord_<guild>_<model>`: right for
    /// a few big guilds.
    #[default]
    PerGuild,
    /// A collection per model, `discord_shared_<model>`, shared by every
    /// guild: each point carries its guild as a tenant key (a keyword index
    /// with `is_tenant`, an HNSW graph per tenant), and every request is
    /// limited to one guild inside Qdrant. Right for many small guilds.
    Shared,
}

impl std::fmt::Debug for QdrantSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantSection").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Which vector store: a Qdrant server when `url` is set, else the embedded one.
#[derive(Debug, Clone, Default)]
pub struct QdrantSettings {
    pub url: Option<String>,
    /// Never printed.
    pub api_key: Option<Secret>,
    /// How the server lays out and waits for collections it creates.
    pub server: ServerOptions,
}

/// What a Qdrant server (or cluster) is asked for beyond its URL: the
/// settings of the collections we create (a cluster keeps `replication_factor`
/// copies of each shard, so losing a node loses nothing and searches go on),
/// and how long one request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Copies of each shard (`[qdrant] replication_factor`; the server's default, 1, when unset).
    pub replication_factor: Option<u32>,
    /// Shards a collection is cut into (`[qdrant] shard_number`; the server's default when unset).
    pub shard_number: Option<u32>,
    /// Copies that must confirm a write before it counts (`[qdrant] write_consistency_factor`, at most the replication factor).
    pub write_consistency_factor: Option<u32>,
    /// The longest one request may take (`[qdrant] timeout_secs`, 30).
    pub timeout: std::time::Duration,
    /// Collections per guild or shared (`[qdrant] layout`, `per-guild`).
    pub layout: Layout,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            replication_factor: None,
            shard_number: None,
            write_consistency_factor: None,
            timeout: std::time::Duration::from_secs(30),
            layout: Layout::PerGuild,
        }
    }
}

impl QdrantSection {
    /// `QDRANT_URL` and `QDRANT_API_KEY` (non-empty) win over the file. The
    /// error names the setting that is out of range.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<QdrantSettings, String> {
        let nonempty = |k: &str| env(k).filter(|s| !s.trim().is_empty());
        let positive = |name: &str, v: Option<u32>| match v {
            Some(0) => Err(format!("[qdrant] {name} must be at least 1")),
            v => Ok(v),
        };
        let replication_factor = positive("replication_factor", self.replication_factor)?;
        let write_consistency_factor = positive("write_consistency_factor", self.write_consistency_factor)?;
        if write_consistency_factor > replication_factor.or(Some(1)) {
            return Err(format!(
                "[qdrant] write_consistency_factor ({}) is more than the copies kept (replication_factor {}): no write \
                 could ever be confirmed",
                write_consistency_factor.unwrap_or(1),
                replication_factor.unwrap_or(1)
            ));
        }
        let timeout = match self.timeout_secs {
            Some(0) => return Err("[qdrant] timeout_secs must be at least 1".into()),
            Some(s) => std::time::Duration::from_secs(s),
            None => ServerOptions::default().timeout,
        };
        Ok(QdrantSettings {
            url: nonempty("QDRANT_URL").or(self.url),
            api_key: nonempty("QDRANT_API_KEY").or(self.api_key).map(Secret),
            server: ServerOptions {
                replication_factor,
                shard_number: positive("shard_number", self.shard_number)?,
                write_consistency_factor,
                timeout,
                layout: self.layout.unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_and_the_key_never_prints() {
        let section: QdrantSection = toml::from_str("url = \"http://file:6334\"\napi_key = \"file-key\"").unwrap();
        assert!(!format!("{section:?}").contains("file-key"));
        let s = section.resolve(|k| (k == "QDRANT_URL").then(|| "http://env:6334".to_owned())).unwrap();
        assert_eq!(s.url.as_deref(), Some("http://env:6334"));
        assert_eq!(s.api_key, Some(Secret("file-key".into())));
        assert!(!format!("{s:?}").contains("file-key"));
        // An empty variable is no setting.
        let section: QdrantSection = toml::from_str("url = \"http://file:6334\"").unwrap();
        let s = section.resolve(|_| Some(" ".to_owned())).unwrap();
        assert_eq!((s.url.as_deref(), s.api_key), (Some("http://file:6334"), None));
        assert_eq!(s.server, ServerOptions::default());
    }

    #[test]
    fn cluster_settings_are_checked_and_named() {
        let resolve = |text: &str| toml::from_str::<QdrantSection>(text).unwrap().resolve(|_| None);
        let s = resolve("replication_factor = 2\nshard_number = 3\nwrite_consistency_factor = 2\ntimeout_secs = 5")
            .unwrap()
            .server;
        assert_eq!((s.replication_factor, s.shard_number, s.write_consistency_factor), (Some(2), Some(3), Some(2)));
        assert_eq!(s.timeout, std::time::Duration::from_secs(5));
        for (text, named) in [
            ("replication_factor = 0", "replication_factor"),
            ("shard_number = 0", "shard_number"),
            ("timeout_secs = 0", "timeout_secs"),
            ("write_consistency_factor = 2", "write_consistency_factor (2)"),
            ("replication_factor = 2\nwrite_consistency_factor = 3", "replication_factor 2"),
        ] {
            let err = resolve(text).unwrap_err();
            assert!(err.contains(named), "{text}: {err}");
        }
        assert!(toml::from_str::<QdrantSection>("replication = 2").is_err(), "unknown keys are refused");
        assert_eq!(resolve("layout = \"shared\"").unwrap().server.layout, Layout::Shared);
        assert_eq!(resolve("layout = \"per-guild\"").unwrap().server.layout, Layout::PerGuild);
        assert!(toml::from_str::<QdrantSection>("layout = \"pooled\"").is_err());
    }
}
