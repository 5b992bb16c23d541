//! The `[qdrant]` section of the config file: a Qdrant server (or cluster)
//! to use instead of the embedded store. The environment overrides it.

use crate::config::Secret;

/// The `[qdrant]` table as written.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantSection {
    url: Option<String>,
    api_key: Option<String>,
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
}

impl QdrantSection {
    /// `QDRANT_URL` and `QDRANT_API_KEY` (non-empty) win over the file.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> QdrantSettings {
        let nonempty = |k: &str| env(k).filter(|s| !s.trim().is_empty());
        QdrantSettings {
            url: nonempty("QDRANT_URL").or(self.url),
            api_key: nonempty("QDRANT_API_KEY").or(self.api_key).map(Secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_and_the_key_never_prints() {
        let section: QdrantSection = toml::from_str("url = \"http://file:6334\"\napi_key = \"file-key\"").unwrap();
        assert!(!format!("{section:?}").contains("file-key"));
        let s = section.resolve(|k| (k == "QDRANT_URL").then(|| "http://env:6334".to_owned()));
        assert_eq!(s.url.as_deref(), Some("http://env:6334"));
        assert_eq!(s.api_key, Some(Secret("file-key".into())));
        assert!(!format!("{s:?}").contains("file-key"));
        // An empty variable is no setting.
        let section: QdrantSection = toml::from_str("url = \"http://file:6334\"").unwrap();
        let s = section.resolve(|_| Some(" ".to_owned()));
        assert_eq!((s.url.as_deref(), s.api_key), (Some("http://file:6334"), None));
    }
}
