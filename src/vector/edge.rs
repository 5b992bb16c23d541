//! The embedded backend: one qdrant-edge shard per collection, in process.
//!
//! A shard directory can be opened once per process (qdrant-edge locks its
//! WAL), so open shards are shared: the bot's searches and its re-index jobs
//! use the same `Arc<Shard>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard, EdgeVectorParams,
    FieldCondition, FieldIndexOperations, Filter, HnswIndexConfig, JsonPath, Match, NamedQuery, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStruct, PointStructPersisted, QueryEnum,
    QueryRequest, Range, ScoringQuery, UpdateOperation, VectorInternal, VectorStructInternal, WithPayloadInterface,
    WithVector,
};

use super::{ChunkPayload, Owner, SearchFilter, StoredHit as Hit, StoredPoint as Point, VectorError, VECTOR};

const CONFIG_FILE: &str = "edge_config.json";

pub struct Shard {
    path: PathBuf,
    shard: EdgeShard,
    dim: usize,
    /// Serializes writes, optimize and flush (qdrant-edge's flush panics if
    /// it meets a concurrent write).
    write: Mutex<()>,
    /// The writable copy searched in place of a store on a read-only data
    /// directory, deleted with the shard (after it: fields drop in order).
    _copy: Option<tempfile::TempDir>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> VectorError {
    VectorError::Edge { path: path.into(), detail: e.to_string() }
}

fn config(dim: usize) -> EdgeConfig {
    EdgeConfig::builder()
        .vector(VECTOR, EdgeVectorParams::builder(dim, Distance::Cosine).build())
        .hnsw_config(HnswIndexConfig { max_indexing_threads: 2, ..Default::default() })
        .optimizers(EdgeOptimizersConfig { default_segment_number: Some(2), ..Default::default() })
        .build()
}

fn id_condition(field: &str, values: Vec<i64>) -> Condition {
    Condition::Field(FieldCondition::new_match(
        JsonPath::try_from(field).expect("valid field name"),
        Match::from(values),
    ))
}

/// A search filter as the engine's conditions (all must hold); `None` for no filter.
fn search_filter(f: &SearchFilter) -> Option<Filter> {
    let ids = |v: &[u64]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
    let mut must = Vec::new();
    if let Some(channels) = &f.channels {
        must.push(id_condition("channel_id", ids(channels)));
    }
    if !f.authors.is_empty() {
        must.push(id_condition("author_ids", ids(&f.authors)));
    }
    if f.from_id.is_some() || f.until_id.is_some() {
        // Ranges are compared as floats: ids lose their lowest bits (well under a
        // second of a snowflake's time), which a date filter does not notice.
        let range = Range {
            gte: f.from_id.map(|x| OrderedFloat(x as f64)),
            lt: f.until_id.map(|x| OrderedFloat(x as f64)),
            ..Default::default()
        };
        must.push(Condition::Field(FieldCondition::new_range(
            JsonPath::try_from("first_message_id").expect("valid field name"),
            range,
        )));
    }
    (!must.is_empty()).then(|| Filter { must: Some(must), ..Filter::new() })
}

/// Shards open in this process, by directory.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Shard>>>> = LazyLock::new(Mutex::default);
/// Free space the embedded store wants before it writes. Its write-ahead log
/// maps 32 MB files, and a write into a mapped page on a full disk kills the
/// process (SIGBUS) rather than returning an error: so stop before.
const MIN_FREE: u64 = 96 << 20;

/// Errs when less than [`MIN_FREE`] + `bytes` is free where `path` lives.
fn ensure_space(path: &Path, bytes: u64) -> Result<(), VectorError> {
    let need = MIN_FREE + bytes;
    match crate::disk::free_bytes(path) {
        Some(free) if free < need => Err(VectorError::NoSpace { path: path.into(), free, need }),
        _ => Ok(()),
    }
}

/// Errs unless a store at `path` can be loaded without running out of
/// space: loading opens its log (which may map a new 32 MB file), may add a
/// segment, and populates its mapped files, whose holes need pages of their
/// own on tmpfs. Also for a load that only reads: without the pages, the
/// process dies of SIGBUS.
fn ensure_space_to_load(path: &Path) -> Result<(), VectorError> {
    ensure_space(path, crate::disk::holes(path))
}

/// A load of the store at `path` that failed: damaged files, unless the
/// cause is outside them (no space, no permission).
fn load_failed(path: &Path, owner: &Owner, e: impl std::fmt::Display) -> VectorError {
    let detail = e.to_string();
    let os_error = |code: i32| detail.contains(&format!("(os error {code})"));
    if os_error(libc::ENOSPC) {
        let free = crate::disk::free_bytes(path).unwrap_or(0);
        let need = (MIN_FREE + crate::disk::holes(path)).max(free + (1 << 20));
        return VectorError::NoSpace { path: path.into(), free, need };
    }
    if [libc::EACCES, libc::EPERM, libc::EROFS, libc::EMFILE, libc::ENFILE, libc::ENOMEM].into_iter().any(os_error) {
        return err(path, detail);
    }
    owner.damaged(path.display(), detail)
}

/// Copies a store's segments and config (not its log) to a new temporary
/// directory, deleted when the returned handle drops.
fn writable_copy(path: &Path) -> Result<tempfile::TempDir, VectorError> {
    // The copy is loaded as the store would be: room for all of it, its
    // holes included (a copy may fill them), and the margin a load needs.
    let size: u64 = walkdir::WalkDir::new(path)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.path().strip_prefix(path).is_ok_and(|r| r.starts_with("wal")))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    ensure_space(&std::env::temp_dir(), size)?;
    let copy = tempfile::Builder::new().prefix("discord-indexer-store-").tempdir().map_err(|e| err(path, e))?;
    let mut bytes = 0;
    for entry in walkdir::WalkDir::new(path).min_depth(1) {
        let entry = entry.map_err(|e| err(path, e))?;
        let relative = entry.path().strip_prefix(path).expect("under the store");
        if relative.starts_with("wal") {
            continue;
        }
        let to = copy.path().join(relative);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).map_err(|e| err(path, e))?;
        } else {
            bytes += std::fs::copy(entry.path(), &to).map_err(|e| err(path, e))?;
        }
    }
    tracing::warn!(
        "{} is read-only: searching a copy of it in {} ({} MB, deleted afterwards)",
        path.display(),
        copy.path().display(),
        bytes >> 20
    );
    Ok(copy)
}

/// Held while a shard is being opened, so two threads never load one directory twice.
static OPENING: Mutex<()> = Mutex::new(());

fn already_open(path: &Path) -> Option<Arc<Shard>> {
    let mut open = OPEN.lock().unwrap();
    open.retain(|_, w| w.strong_count() > 0);
    open.get(path).and_then(Weak::upgrade)
}

fn register(shard: Shard) -> Arc<Shard> {
    let shard = Arc::new(shard);
    OPEN.lock().unwrap().insert(shard.path.clone(), Arc::downgrade(&shard));
    shard
}

/// Loads a shard, waiting while its WAL lock is held: a shard of this
/// process that was just dropped releases it only when its final flush ends
/// (on another thread), and another process may hold it for a moment.
fn load_when_free(path: &Path, owner: &Owner) -> Result<EdgeShard, VectorError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match EdgeShard::load(path, None) {
            Err(e) if format!("{e}").contains("WouldBlock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(err(
                        path,
                        format!("in use by another process (a `discord-indexer index`, or a running bot?): {e}"),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.map_err(|e| load_failed(path, owner, e)),
        }
    }
}

/// How long an open waits for a shard's WAL lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Shard {
    /// Opens the shard at `path`, creating it for `dim`-dimensional vectors.
    pub fn open(path: PathBuf, owner: &Owner, dim: usize) -> Result<Arc<Shard>, VectorError> {
        let model = &owner.model;
        let existing = path.ancestors().find(|p| p.exists()).unwrap_or(&path);
        if !crate::disk::writable(existing) {
            return Err(VectorError::ReadOnly(path));
        }
        std::fs::create_dir_all(&path).map_err(|e| err(&path, e))?;
        let _opening = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = already_open(&path) {
            if open.dim != dim {
                return Err(VectorError::DimensionMismatch {
                    name: path.display().to_string(),
                    model: model.into(),
                    found: open.dim,
                    wanted: dim,
                });
            }
            return Ok(open);
        }
        ensure_space_to_load(&path)?;
        let shard = if path.join(CONFIG_FILE).exists() {
            load_when_free(&path, owner)?
        } else {
            EdgeShard::new(&path, config(dim)).map_err(|e| err(&path, e))?
        };
        let found = shard.config().vectors.get(VECTOR).map_or(0, |v| v.size);
        if found != dim {
            return Err(VectorError::DimensionMismatch {
                name: path.display().to_string(),
                model: model.into(),
                found,
                wanted: dim,
            });
        }
        let s = Shard { path, shard, dim, write: Mutex::new(()), _copy: None };
        // Re-issued after every load: a segment created at load time may lack them.
        for field in ChunkPayload::INDEXED {
            s.update(UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                field_name: JsonPath::try_from(field).expect("valid field name"),
                field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Integer)),
            })))?;
        }
        Ok(register(s))
    }

    pub fn open_existing(path: PathBuf, owner: &Owner) -> Result<Option<Arc<Shard>>, VectorError> {
        if !path.join(CONFIG_FILE).exists() {
            return Ok(None);
        }
        let _opening = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = already_open(&path) {
            return Ok(Some(open));
        }
        // Searching writes too (see `ensure_space_to_load`); nothing can be
        // written to a read-only data directory, which is searched in a copy.
        let writable = crate::disk::writable(&path);
        if writable {
            ensure_space_to_load(&path)?;
        }
        let (shard, copy) = match load_when_free(&path, owner) {
            // qdrant-edge opens its log for writing even to search: on a
            // read-only data directory, search a copy (the log left out).
            Err(_) if !writable => {
                let copy = writable_copy(&path)?;
                let shard = EdgeShard::load(copy.path(), None).map_err(|e| load_failed(&path, owner, e))?;
                (shard, Some(copy))
            }
            other => (other?, None),
        };
        let dim = shard.config().vectors.get(VECTOR).map_or(0, |v| v.size);
        Ok(Some(register(Shard { path, shard, dim, write: Mutex::new(()), _copy: copy })))
    }

    /// Deletes a shard's directory. A holder of the old shard keeps its open
    /// files; later opens start afresh.
    pub fn remove(path: &Path) -> Result<(), VectorError> {
        OPEN.lock().unwrap().remove(path);
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(path, e)),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn update(&self, op: UpdateOperation) -> Result<(), VectorError> {
        self.update_needing(op, 0)
    }

    /// An update that writes about `bytes` more than the engine's margin.
    fn update_needing(&self, op: UpdateOperation, bytes: u64) -> Result<(), VectorError> {
        let _guard = self.write.lock().unwrap();
        ensure_space(&self.path, bytes)?;
        self.shard.update(op).map_err(|e| err(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        // Vectors and payloads, written to the log and then to segments.
        let bytes = points.iter().map(|p| 2 * (p.vector.len() as u64 * 4 + 2048)).sum();
        let mut list: Vec<PointStructPersisted> = Vec::with_capacity(points.len());
        for p in points {
            if p.vector.len() != self.dim {
                return Err(err(
                    &self.path,
                    format!("vector of {} dimensions for a {}-dimensional collection", p.vector.len(), self.dim),
                ));
            }
            if !p.payload.is_object() {
                return Err(err(&self.path, "payload must be a JSON object"));
            }
            list.push(PointStruct::new(p.id, qdrant_edge::Vectors::new_named([(VECTOR, p.vector)]), p.payload).into());
        }
        self.update_needing(
            UpdateOperation::PointOperation(PointOperations::UpsertPoints(PointInsertOperations::PointsList(list))),
            bytes,
        )
    }

    pub fn delete(&self, ids: Vec<u64>) -> Result<(), VectorError> {
        let ids = ids.into_iter().map(PointId::NumId).collect();
        self.update(UpdateOperation::PointOperation(PointOperations::DeletePoints { ids }))
    }

    pub fn count(&self) -> Result<u64, VectorError> {
        let n = self.shard.count(CountRequest { filter: None, exact: true }).map_err(|e| err(&self.path, e))?;
        Ok(n as u64)
    }

    pub fn search(&self, vector: Vec<f32>, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, VectorError> {
        let filter = search_filter(filter);
        let hits = self
            .shard
            .query(QueryRequest {
                prefetches: vec![],
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                    VectorInternal::Dense(vector),
                    VECTOR,
                )))),
                filter,
                score_threshold: None,
                limit,
                offset: 0,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(true),
            })
            .map_err(|e| err(&self.path, e))?;
        Ok(hits
            .into_iter()
            .filter_map(|h| match h.id {
                PointId::NumId(id) => Some(Hit {
                    id,
                    score: h.score,
                    payload: h
                        .payload
                        .map(|p| serde_json::Value::Object(p.0.into_iter().collect()))
                        .unwrap_or_default(),
                }),
                PointId::Uuid(_) => None,
            })
            .collect())
    }

    pub fn payloads(&self, ids: Vec<u64>) -> Result<Vec<(u64, serde_json::Value)>, VectorError> {
        let ids: Vec<PointId> = ids.into_iter().map(PointId::NumId).collect();
        let records = self
            .shard
            .retrieve(&ids, Some(WithPayloadInterface::Bool(true)), Some(WithVector::Bool(false)))
            .map_err(|e| err(&self.path, e))?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r.id {
                PointId::NumId(id) => Some((
                    id,
                    r.payload.map(|p| serde_json::Value::Object(p.0.into_iter().collect())).unwrap_or_default(),
                )),
                PointId::Uuid(_) => None,
            })
            .collect())
    }

    /// The stored vectors of these points (those that exist).
    pub fn vectors(&self, ids: Vec<u64>) -> Result<Vec<(u64, Vec<f32>)>, VectorError> {
        let ids: Vec<PointId> = ids.into_iter().map(PointId::NumId).collect();
        let records = self
            .shard
            .retrieve(&ids, Some(WithPayloadInterface::Bool(false)), Some(WithVector::Bool(true)))
            .map_err(|e| err(&self.path, e))?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let PointId::NumId(id) = r.id else { return None };
                let vector = match r.vector? {
                    VectorStructInternal::Named(mut named) => match named.remove(VECTOR)? {
                        VectorInternal::Dense(v) => v,
                        _ => return None,
                    },
                    VectorStructInternal::Single(v) => v,
                    VectorStructInternal::MultiDense(_) => return None,
                };
                Some((id, vector))
            })
            .collect())
    }

    /// Makes every write so far durable. qdrant-edge 0.7 does not replay its
    /// WAL when a shard is loaded: only flushed segments survive a crash.
    pub fn persist(&self) -> Result<(), VectorError> {
        let _guard = self.write.lock().unwrap();
        self.flush_locked()
    }

    /// qdrant-edge's flush panics on I/O errors; turn that into an error.
    fn flush_locked(&self) -> Result<(), VectorError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shard.flush()))
            .map_err(|_| err(&self.path, "flushing to disk failed (disk full or read-only?)"))
    }

    pub fn finish(&self) -> Result<(), VectorError> {
        let _guard = self.write.lock().unwrap();
        // Optimizing writes new segments beside the old ones.
        ensure_space(&self.path, crate::disk::dir_size(&self.path))?;
        self.shard.optimize().map_err(|e| err(&self.path, e))?;
        self.flush_locked()
    }

    pub fn indexed_vectors(&self) -> u64 {
        self.shard.info().indexed_vectors_count as u64
    }
}
