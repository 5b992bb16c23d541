//! The vector-store boundary: one collection per (guild, model). The default
//! is embedded: a qdrant-edge shard in `<data-dir>/qdrant/<guild>/<model>/`,
//! in process. Configuring `[qdrant] url` uses a Qdrant server or cluster
//! instead (collections `discord_<guild>_<model>`, with an alias
//! `discord_<guild>` on the active one; or, with `[qdrant] layout =
//! "shared"`, one collection per model for every guild, `discord_shared_<model>`,
//! each guild a tenant). Both backends store the same points:
//! a u64 id (the chunk id), one named vector, and a [`ChunkPayload`] (as a
//! JSON object inside the engines; typed everywhere else).

mod edge;
mod payload;
mod remote;
mod settings;

use std::path::PathBuf;

pub use payload::ChunkPayload;
pub use settings::{Layout, QdrantSection, QdrantSettings, ServerOptions};

/// The name of the one vector every point carries.
pub const VECTOR: &str = "chunk";

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("the collection {name} holds {found}-dimensional vectors but model {model} makes {wanted}; rebuild with --rebuild or drop it with drop-index")]
    DimensionMismatch { name: String, model: String, found: usize, wanted: usize },
    #[error("embedded vector store {path}: {detail}")]
    Edge { path: PathBuf, detail: String },
    #[error("Qdrant server {url} ([qdrant] url, or QDRANT_URL): {detail}")]
    Remote { url: String, detail: String },
    #[error(
        "the vector store {name} is damaged ({detail}); rebuild it: discord-indexer index --guild {guild} --model {model} --rebuild"
    )]
    Damaged { name: String, guild: u64, model: String, detail: String },
    #[error(
        "disk full: {} MB free where the embedded vector store {} writes, it needs at least {} MB (it maps its write-ahead log files); free some space and rerun: what is stored is kept",
        free >> 20, path.display(), need >> 20
    )]
    NoSpace { path: PathBuf, free: u64, need: u64 },
    #[error("the vector store {} is read-only (a read-only data directory?) and this command writes to it; `status` and `ask` work on a read-only data directory", .0.display())]
    ReadOnly(PathBuf),
}

/// Whose index a collection holds: what a message about its damage names.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    guild: u64,
    /// The model, also for a rebuild's second collection (`<model>~b`, see
    /// [`crate::index::collection_keys`]).
    model: String,
}

impl Owner {
    fn new(guild: u64, key: &str) -> Owner {
        Owner { guild, model: key.strip_suffix("~b").unwrap_or(key).to_owned() }
    }

    /// The store `name` cannot be read: rebuilding it is the way out.
    pub(crate) fn damaged(&self, name: impl std::fmt::Display, detail: impl std::fmt::Display) -> VectorError {
        VectorError::Damaged {
            name: name.to_string(),
            guild: self.guild,
            model: self.model.clone(),
            detail: detail.to_string(),
        }
    }

    /// A read of an open embedded store that failed: its files are damaged.
    fn unreadable(&self, e: VectorError) -> VectorError {
        match e {
            VectorError::Edge { path, detail } => self.damaged(path.display(), detail),
            e => e,
        }
    }
}

/// Runs qdrant-edge work for the store at `path` on the blocking pool. The
/// engine panics on some damaged files (a truncated vector file, a garbled
/// tracker); such a panic becomes [`VectorError::Damaged`], naming the store
/// and how to rebuild it, instead of taking the process down.
async fn engine<T: Send + 'static>(
    owner: &Owner,
    path: PathBuf,
    f: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, VectorError> {
    let owner = owner.clone();
    crate::blocking::run(move || {
        crate::blocking::contained(f).unwrap_or_else(|detail| Err(owner.damaged(path.display(), detail)))
    })
    .await
}

/// A point to store.
#[derive(Debug, Clone)]
pub struct Point {
    pub id: u64,
    pub vector: Vec<f32>,
    pub payload: ChunkPayload,
}

/// What a search is limited to: applied inside the engine, so a search
/// returns as many hits as exist among what the filter lets through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Only points of these channels and threads (`None`: all).
    pub channels: Option<Vec<u64>>,
    /// Only points with one of these authors (empty: any).
    pub authors: Vec<u64>,
    /// Only points whose first message id is at least this.
    pub from_id: Option<u64>,
    /// Only points whose first message id is below this.
    pub until_id: Option<u64>,
}

/// A search result.
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: u64,
    pub score: f32,
    pub payload: ChunkPayload,
}

/// A point as the engines store it: the payload as a JSON object.
pub struct StoredPoint {
    id: u64,
    vector: Vec<f32>,
    payload: serde_json::Value,
}

/// A search result as the engines return it.
pub struct StoredHit {
    id: u64,
    score: f32,
    payload: serde_json::Value,
}

/// Where collections live.
#[derive(Clone)]
pub enum Backend {
    Edge { root: PathBuf },
    Remote(remote::Server),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Edge { root } => write!(f, "Edge({})", root.display()),
            Backend::Remote(s) => write!(f, "Remote({})", s.url),
        }
    }
}

/// A name made safe for directories and collection names.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c.to_ascii_lowercase() } else { '_' })
        .collect()
}

impl Backend {
    /// The embedded store under `data_dir`, or the server at `url` when given.
    pub fn new(data_dir: &std::path::Path, url: Option<&str>, api_key: Option<&str>) -> Result<Backend, VectorError> {
        Backend::with_options(data_dir, url, api_key, settings::ServerOptions::default())
    }

    /// [`Backend::new`], a server asked for `options` (collection layout, timeout).
    pub fn with_options(
        data_dir: &std::path::Path,
        url: Option<&str>,
        api_key: Option<&str>,
        options: settings::ServerOptions,
    ) -> Result<Backend, VectorError> {
        match url {
            Some(url) => Ok(Backend::Remote(remote::Server::connect(url, api_key, options)?)),
            None => Ok(Backend::Edge { root: data_dir.join("qdrant") }),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Edge { .. } => "edge",
            Backend::Remote(_) => "remote",
        }
    }

    /// The collection's name: its shard directory, or its server collection name.
    pub fn collection_name(&self, guild: u64, model: &str) -> String {
        match self {
            Backend::Edge { root } => root.join(guild.to_string()).join(slug(model)).display().to_string(),
            Backend::Remote(server) => server.collection_name(guild, model),
        }
    }

    /// Opens (creating if needed) a guild's collection for a model of `dim` dimensions.
    pub async fn open(&self, guild: u64, model: &str, dim: usize) -> Result<Collection, VectorError> {
        let owner = Owner::new(guild, model);
        let inner = match self {
            Backend::Edge { root } => {
                let path = root.join(guild.to_string()).join(slug(model));
                let o = owner.clone();
                Inner::Edge(engine(&owner, path.clone(), move || edge::Shard::open(path, &o, dim)).await?)
            }
            Backend::Remote(server) => Inner::Remote(server.open(guild, model, dim).await?),
        };
        Ok(Collection { inner, owner })
    }

    /// Opens an existing collection for searching; `None` if there is none.
    pub async fn open_existing(&self, guild: u64, model: &str) -> Result<Option<Collection>, VectorError> {
        let owner = Owner::new(guild, model);
        let inner = match self {
            Backend::Edge { root } => {
                let path = root.join(guild.to_string()).join(slug(model));
                let o = owner.clone();
                match engine(&owner, path.clone(), move || edge::Shard::open_existing(path, &o)).await? {
                    Some(shard) => Inner::Edge(shard),
                    None => return Ok(None),
                }
            }
            Backend::Remote(server) => match server.open_existing(guild, model).await? {
                Some(c) => Inner::Remote(c),
                None => return Ok(None),
            },
        };
        Ok(Some(Collection { inner, owner }))
    }

    /// Deletes a guild's collection for a model (no error if there is none).
    pub async fn drop_collection(&self, guild: u64, model: &str) -> Result<(), VectorError> {
        match self {
            Backend::Edge { root } => {
                let path = root.join(guild.to_string()).join(slug(model));
                engine(&Owner::new(guild, model), path.clone(), move || edge::Shard::remove(&path)).await
            }
            Backend::Remote(server) => server.drop_collection(guild, model).await,
        }
    }

    /// Makes `model` the collection searched for `guild` (the server's alias;
    /// the embedded store keeps the choice in the archive only).
    pub async fn activate(&self, guild: u64, model: &str) -> Result<(), VectorError> {
        match self {
            Backend::Edge { .. } => Ok(()),
            Backend::Remote(server) => server.point_alias(guild, model).await,
        }
    }
}

/// One (guild, model) collection.
pub struct Collection {
    inner: Inner,
    owner: Owner,
}

enum Inner {
    Edge(std::sync::Arc<edge::Shard>),
    Remote(remote::RemoteCollection),
}

impl Collection {
    /// The shard directory, or the server collection's name (for messages).
    pub fn name(&self) -> String {
        match &self.inner {
            Inner::Edge(s) => s.path().display().to_string(),
            Inner::Remote(c) => c.name().to_owned(),
        }
    }

    fn decode(&self, id: u64, payload: serde_json::Value) -> Result<ChunkPayload, VectorError> {
        ChunkPayload::from_json(payload)
            .map_err(|e| self.owner.damaged(self.name(), format_args!("point {id} has an unreadable payload: {e}")))
    }

    pub fn dim(&self) -> usize {
        match &self.inner {
            Inner::Edge(s) => s.dim(),
            Inner::Remote(c) => c.dim,
        }
    }

    pub async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let points: Vec<StoredPoint> = points
            .into_iter()
            .map(|p| StoredPoint { id: p.id, vector: p.vector, payload: p.payload.to_json() })
            .collect();
        match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.upsert(points)).await
            }
            Inner::Remote(c) => c.upsert(points).await,
        }
    }

    pub async fn delete(&self, ids: Vec<u64>) -> Result<(), VectorError> {
        if ids.is_empty() {
            return Ok(());
        }
        match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.delete(ids)).await
            }
            Inner::Remote(c) => c.delete(ids).await,
        }
    }

    pub async fn count(&self) -> Result<u64, VectorError> {
        match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.count())
                    .await
                    .map_err(|e| self.owner.unreadable(e))
            }
            Inner::Remote(c) => c.count().await,
        }
    }

    /// Nearest points to `vector` among those `filter` lets through (the
    /// filter is applied inside the search).
    pub async fn search(&self, vector: Vec<f32>, filter: SearchFilter, limit: usize) -> Result<Vec<Hit>, VectorError> {
        let hits = match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.search(vector, &filter, limit))
                    .await
                    .map_err(|e| self.owner.unreadable(e))
            }
            Inner::Remote(c) => c.search(vector, &filter, limit).await,
        }?;
        hits.into_iter().map(|h| Ok(Hit { id: h.id, score: h.score, payload: self.decode(h.id, h.payload)? })).collect()
    }

    /// The stored payloads of these points (missing ones left out).
    pub async fn payloads(&self, ids: Vec<u64>) -> Result<Vec<(u64, ChunkPayload)>, VectorError> {
        let found = match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.payloads(ids))
                    .await
                    .map_err(|e| self.owner.unreadable(e))
            }
            Inner::Remote(c) => c.payloads(ids).await,
        }?;
        found.into_iter().map(|(id, p)| Ok((id, self.decode(id, p)?))).collect()
    }

    /// The stored vectors of these points (those that exist).
    pub async fn vectors(&self, ids: Vec<u64>) -> Result<Vec<(u64, Vec<f32>)>, VectorError> {
        match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.vectors(ids))
                    .await
                    .map_err(|e| self.owner.unreadable(e))
            }
            Inner::Remote(c) => c.vectors(ids).await,
        }
    }

    /// Makes every write so far durable (before the archive records it).
    pub async fn persist(&self) -> Result<(), VectorError> {
        match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.persist()).await
            }
            // Writes to a server wait for it (`wait=true`).
            Inner::Remote(_) => Ok(()),
        }
    }

    /// After a bulk load: build the search index (HNSW) and persist.
    pub async fn finish(&self) -> Result<(), VectorError> {
        match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || s.finish()).await
            }
            Inner::Remote(_) => Ok(()),
        }
    }

    /// How many vectors the search index (HNSW) covers.
    pub async fn indexed_vectors(&self) -> Result<u64, VectorError> {
        match &self.inner {
            Inner::Edge(s) => {
                let s = s.clone();
                engine(&self.owner, s.path().to_path_buf(), move || Ok(s.indexed_vectors())).await
            }
            Inner::Remote(c) => c.indexed_vectors().await,
        }
    }
}
