//! The server backend: a Qdrant server or cluster over gRPC (qdrant-client).
//! Collections are named `discord_<guild>_<model>`; the alias
//! `discord_<guild>` points at the active one and is re-pointed in one step.
//! Collections are created as `[qdrant]` asks ([`ServerOptions`]: shards,
//! replicas, write consistency). Every request is idempotent (points have
//! fixed ids), so one that meets a node going away or a busy server is tried
//! again, a bounded number of times, before the error reaches the caller.

use std::collections::HashMap;
use std::sync::Arc;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, Condition, CountPointsBuilder, CreateAliasBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter, GetPointsBuilder,
    HnswConfigDiffBuilder, KeywordIndexParamsBuilder, PointStruct, PointsIdsList, Query, QueryPointsBuilder, Range,
    UpsertPointsBuilder, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};

use super::{
    slug, ChunkPayload, Layout, SearchFilter, ServerOptions, StoredHit as Hit, StoredPoint as Point, VectorError,
    VECTOR,
};

fn model_part(model: &str) -> String {
    slug(model).replace(['-', '.'], "_")
}

pub fn alias_name(guild: u64) -> String {
    format!("discord_{guild}")
}

#[derive(Clone)]
pub struct Server {
    pub url: String,
    client: Arc<Qdrant>,
    options: ServerOptions,
}

/// Tries of a request that fails in a way that may pass (the server
/// unreachable or busy, a node of a cluster going away).
const TRIES: u32 = 3;

/// Points per upsert request, and requests of one batch sent at once.
const UPSERT_POINTS: usize = 256;
const UPSERT_IN_FLIGHT: usize = 4;

/// Whether a failed request may succeed if tried again.
fn transient(e: &qdrant_client::QdrantError) -> bool {
    use tonic::Code;
    match e {
        qdrant_client::QdrantError::ResourceExhaustedError { .. } => true,
        qdrant_client::QdrantError::ResponseError { status } => {
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled)
                || unreachable(status).is_some()
        }
        _ => false,
    }
}

/// Why the server could not be reached, when that is what `status` says
/// (qdrant-client reports a failed connection as an internal error).
fn unreachable(status: &tonic::Status) -> Option<&'static str> {
    let text = status.message();
    if !text.contains("Failed to connect") && !text.contains("transport error") {
        return None;
    }
    Some(if text.contains("ConnectionRefused") || text.contains("Connection refused") {
        "connection refused"
    } else if text.contains("TimedOut") || text.contains("timed out") || text.contains("Elapsed") {
        "no answer to the connection"
    } else {
        "the connection failed"
    })
}

/// Runs `request` (again, after 0.25 s and 0.5 s) while it fails in a way
/// that may pass, at most [`TRIES`] times.
async fn retried<T, F, Fut>(url: &str, timeout: std::time::Duration, mut request: F) -> Result<T, VectorError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, qdrant_client::QdrantError>>,
{
    let mut pause = std::time::Duration::from_millis(250);
    for attempt in 1..=TRIES {
        match request().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < TRIES && transient(&e) => {
                tracing::debug!("Qdrant server {url}: {e}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => return Err(failure(url, timeout, attempt, e)),
        }
    }
    unreachable!("the last try returns")
}

/// A failed request in words: the server unreachable, too slow, or what it said.
fn failure(url: &str, timeout: std::time::Duration, tries: u32, e: qdrant_client::QdrantError) -> VectorError {
    let tried = if tries > 1 { format!(", tried {tries} times") } else { String::new() };
    if let qdrant_client::QdrantError::ResponseError { status } = &e {
        if let Some(why) = unreachable(status) {
            return err(
                url,
                format!("cannot connect ({why}{tried}); is the server running, and is this its gRPC port?"),
            );
        }
        match status.code() {
            tonic::Code::Unavailable => return err(url, format!("unavailable ({}{tried})", status.message())),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                return err(url, format!("no answer within {} s ([qdrant] timeout_secs{tried})", timeout.as_secs()))
            }
            _ => {}
        }
    }
    err(url, e)
}

pub struct RemoteCollection {
    server: Server,
    name: String,
    pub dim: usize,
    /// In the shared layout: the guild every request is limited to.
    tenant: Option<u64>,
}

/// The condition that limits a request to one guild of a shared collection.
fn tenant_condition(guild: u64) -> Condition {
    Condition::matches(ChunkPayload::TENANT, guild.to_string())
}

fn err(url: &str, e: impl std::fmt::Display) -> VectorError {
    VectorError::Remote { url: url.into(), detail: e.to_string() }
}

fn json_to_payload(url: &str, v: serde_json::Value) -> Result<Payload, VectorError> {
    Payload::try_from(v).map_err(|e| err(url, e))
}

fn payload_to_json(p: HashMap<String, qdrant_client::qdrant::Value>) -> serde_json::Value {
    serde_json::Value::Object(p.into_iter().map(|(k, v)| (k, v.into_json())).collect())
}

impl Server {
    pub fn connect(url: &str, api_key: Option<&str>, options: ServerOptions) -> Result<Server, VectorError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key.map(str::to_owned))
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(std::time::Duration::from_secs(5)))
            .skip_compatibility_check()
            .build()
            .map_err(|e| err(url, e))?;
        Ok(Server { url: url.into(), client: Arc::new(client), options })
    }

    /// The collection of `guild`'s index for `model`: its own, or the one
    /// every guild shares ([`Layout`]).
    pub fn collection_name(&self, guild: u64, model: &str) -> String {
        match self.options.layout {
            Layout::PerGuild => format!("discord_{guild}_{}", model_part(model)),
            Layout::Shared => format!("discord_shared_{}", model_part(model)),
        }
    }

    fn tenant(&self, guild: u64) -> Option<u64> {
        (self.options.layout == Layout::Shared).then_some(guild)
    }

    /// Runs `request` as [`retried`] does, with this server's URL and timeout.
    async fn call<T, F, Fut>(&self, request: F) -> Result<T, VectorError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, qdrant_client::QdrantError>>,
    {
        retried(&self.url, self.options.timeout, request).await
    }

    async fn dim_of(&self, name: &str) -> Result<Option<usize>, VectorError> {
        if !self.call(|| self.client.collection_exists(name)).await? {
            return Ok(None);
        }
        let info = self.call(|| self.client.collection_info(name)).await?;
        let size = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config)
            .and_then(|c| match c {
                qdrant_client::qdrant::vectors_config::Config::ParamsMap(m) => m.map.get(VECTOR).map(|p| p.size),
                qdrant_client::qdrant::vectors_config::Config::Params(p) => Some(p.size),
            })
            .unwrap_or(0);
        Ok(Some(size as usize))
    }

    pub async fn open(&self, guild: u64, model: &str, dim: usize) -> Result<RemoteCollection, VectorError> {
        let name = self.collection_name(guild, model);
        match self.dim_of(&name).await? {
            Some(found) if found != dim => {
                return Err(VectorError::DimensionMismatch { name, model: model.into(), found, wanted: dim })
            }
            Some(_) => {}
            None => {
                let mut vectors = VectorsConfigBuilder::default();
                vectors.add_named_vector_params(VECTOR, VectorParamsBuilder::new(dim as u64, Distance::Cosine));
                let mut create = CreateCollectionBuilder::new(&name).vectors_config(vectors);
                let o = self.options;
                if o.layout == Layout::Shared {
                    // A graph per tenant beside the global one (searches are
                    // always limited to one guild). Qdrant's advice drops the
                    // global graph (`m = 0`), but on 1.18.3 such a collection
                    // was still optimizing (status yellow, a core busy) 15
                    // minutes after 30,000 points, where this one settled.
                    create = create.hnsw_config(HnswConfigDiffBuilder::default().payload_m(16));
                }
                if let Some(n) = o.replication_factor {
                    create = create.replication_factor(n);
                }
                if let Some(n) = o.shard_number {
                    create = create.shard_number(n);
                }
                if let Some(n) = o.write_consistency_factor {
                    create = create.write_consistency_factor(n);
                }
                // Not retried: a creation whose answer was lost may have
                // happened, and a second one would fail.
                self.client.create_collection(create).await.map_err(|e| failure(&self.url, o.timeout, 1, e))?;
            }
        }
        for field in ChunkPayload::INDEXED {
            let index = CreateFieldIndexCollectionBuilder::new(&name, field, FieldType::Integer).wait(true);
            self.call(|| self.client.create_field_index(index.clone())).await?;
        }
        if self.options.layout == Layout::Shared {
            let index = CreateFieldIndexCollectionBuilder::new(&name, ChunkPayload::TENANT, FieldType::Keyword)
                .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
                .wait(true);
            self.call(|| self.client.create_field_index(index.clone())).await?;
        }
        Ok(RemoteCollection { server: self.clone(), name, dim, tenant: self.tenant(guild) })
    }

    /// The guild's collection for `model` if it exists; in the shared
    /// layout, if it holds points of the guild.
    pub async fn open_existing(&self, guild: u64, model: &str) -> Result<Option<RemoteCollection>, VectorError> {
        let name = self.collection_name(guild, model);
        let Some(dim) = self.dim_of(&name).await? else { return Ok(None) };
        let collection = RemoteCollection { server: self.clone(), name, dim, tenant: self.tenant(guild) };
        if collection.tenant.is_some() && collection.count().await? == 0 {
            return Ok(None);
        }
        Ok(Some(collection))
    }

    /// Deletes the guild's collection for `model`; in the shared layout, the
    /// guild's points in it.
    pub async fn drop_collection(&self, guild: u64, model: &str) -> Result<(), VectorError> {
        let name = self.collection_name(guild, model);
        if !self.call(|| self.client.collection_exists(&name)).await? {
            return Ok(());
        }
        match self.tenant(guild) {
            None => self.call(|| self.client.delete_collection(&name)).await.map(drop),
            Some(guild) => {
                let delete = DeletePointsBuilder::new(&name).points(Filter::must([tenant_condition(guild)])).wait(true);
                self.call(|| self.client.delete_points(delete.clone())).await.map(drop)
            }
        }
    }

    /// Points the guild's alias at the model's collection. Creating an alias
    /// that exists re-points it in one step on the server.
    pub async fn point_alias(&self, guild: u64, model: &str) -> Result<(), VectorError> {
        if self.tenant(guild).is_some() {
            // Shared collections hold every guild: the archive alone says
            // which one a guild's searches use.
            return Ok(());
        }
        let alias = CreateAliasBuilder::new(self.collection_name(guild, model), alias_name(guild));
        self.call(|| self.client.create_alias(alias.clone())).await?;
        Ok(())
    }
}

impl RemoteCollection {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self) -> &str {
        &self.server.url
    }

    /// Whether a point read by id is this collection's: in a shared
    /// collection, one of this guild's (ids are hashes: another guild's
    /// point with the same id is never this guild's).
    fn holds(&self, payload: &HashMap<String, qdrant_client::qdrant::Value>) -> bool {
        let Some(guild) = self.tenant else { return true };
        payload.get(ChunkPayload::TENANT).and_then(|v| v.as_str()).is_some_and(|t| *t == guild.to_string())
    }

    pub async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        let mut list = Vec::with_capacity(points.len());
        for mut p in points {
            if let (Some(guild), Some(map)) = (self.tenant, p.payload.as_object_mut()) {
                map.insert(ChunkPayload::TENANT.into(), guild.to_string().into());
            }
            let vectors: HashMap<String, Vec<f32>> = HashMap::from([(VECTOR.to_owned(), p.vector)]);
            list.push(PointStruct::new(p.id, vectors, json_to_payload(self.url(), p.payload)?));
        }
        // Requests of UPSERT_POINTS points, UPSERT_IN_FLIGHT at a time: a
        // server (or each shard of a cluster) writes several at once, and no
        // one request grows past what a node takes comfortably. The points
        // have distinct ids, so the order in which requests land is free;
        // `wait` keeps "returned" meaning "stored" for the manifest after it.
        use futures::{StreamExt, TryStreamExt};
        let mut requests = Vec::with_capacity(list.len().div_ceil(UPSERT_POINTS));
        while !list.is_empty() {
            let rest = list.split_off(list.len().min(UPSERT_POINTS));
            requests.push(UpsertPointsBuilder::new(&self.name, std::mem::replace(&mut list, rest)).wait(true));
        }
        futures::stream::iter(requests)
            .map(|upsert| async move { self.server.call(|| self.server.client.upsert_points(upsert.clone())).await })
            .buffer_unordered(UPSERT_IN_FLIGHT)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    pub async fn delete(&self, ids: Vec<u64>) -> Result<(), VectorError> {
        let ids = PointsIdsList { ids: ids.into_iter().map(Into::into).collect() };
        let delete = DeletePointsBuilder::new(&self.name).points(ids).wait(true);
        self.server.call(|| self.server.client.delete_points(delete.clone())).await?;
        Ok(())
    }

    pub async fn count(&self) -> Result<u64, VectorError> {
        let mut count = CountPointsBuilder::new(&self.name).exact(true);
        if let Some(guild) = self.tenant {
            count = count.filter(Filter::must([tenant_condition(guild)]));
        }
        let r = self.server.call(|| self.server.client.count(count.clone())).await?;
        Ok(r.result.map_or(0, |r| r.count))
    }

    pub async fn search(&self, vector: Vec<f32>, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, VectorError> {
        let mut q = QueryPointsBuilder::new(&self.name)
            .query(Query::new_nearest(vector))
            .using(VECTOR)
            .limit(limit as u64)
            .with_payload(true);
        let ids = |v: &[u64]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        let mut must: Vec<Condition> = self.tenant.map(tenant_condition).into_iter().collect();
        if let Some(channels) = &filter.channels {
            must.push(Condition::matches("channel_id", ids(channels)));
        }
        if !filter.authors.is_empty() {
            must.push(Condition::matches("author_ids", ids(&filter.authors)));
        }
        if filter.from_id.is_some() || filter.until_id.is_some() {
            let range = Range {
                gte: filter.from_id.map(|x| x as f64),
                lt: filter.until_id.map(|x| x as f64),
                ..Default::default()
            };
            must.push(Condition::range("first_message_id", range));
        }
        if !must.is_empty() {
            q = q.filter(Filter::must(must));
        }
        let r = self.server.call(|| self.server.client.query(q.clone())).await?;
        Ok(r.result
            .into_iter()
            .filter_map(|p| match p.id.and_then(|i| i.point_id_options) {
                Some(PointIdOptions::Num(id)) => Some(Hit { id, score: p.score, payload: payload_to_json(p.payload) }),
                _ => None,
            })
            .collect())
    }

    pub async fn payloads(&self, ids: Vec<u64>) -> Result<Vec<(u64, serde_json::Value)>, VectorError> {
        let ids: Vec<qdrant_client::qdrant::PointId> = ids.into_iter().map(Into::into).collect();
        let get = GetPointsBuilder::new(&self.name, ids).with_payload(true);
        let r = self.server.call(|| self.server.client.get_points(get.clone())).await?;
        Ok(r.result
            .into_iter()
            .filter(|p| self.holds(&p.payload))
            .filter_map(|p| match p.id.and_then(|i| i.point_id_options) {
                Some(PointIdOptions::Num(id)) => Some((id, payload_to_json(p.payload))),
                _ => None,
            })
            .collect())
    }

    pub async fn vectors(&self, ids: Vec<u64>) -> Result<Vec<(u64, Vec<f32>)>, VectorError> {
        use qdrant_client::qdrant::vector_output::Vector;
        let ids: Vec<qdrant_client::qdrant::PointId> = ids.into_iter().map(Into::into).collect();
        use qdrant_client::qdrant::with_payload_selector::SelectorOptions;
        let payload: SelectorOptions = match self.tenant {
            None => SelectorOptions::Enable(false),
            Some(_) => {
                qdrant_client::qdrant::PayloadIncludeSelector { fields: vec![ChunkPayload::TENANT.to_owned()] }.into()
            }
        };
        let get = GetPointsBuilder::new(&self.name, ids).with_payload(payload).with_vectors(true);
        let r = self.server.call(|| self.server.client.get_points(get.clone())).await?;
        Ok(r.result
            .into_iter()
            .filter(|p| self.holds(&p.payload))
            .filter_map(|p| {
                let Some(PointIdOptions::Num(id)) = p.id.and_then(|i| i.point_id_options) else { return None };
                match p.vectors?.get_vector_by_name(VECTOR)? {
                    Vector::Dense(d) => Some((id, d.data)),
                    _ => None,
                }
            })
            .collect())
    }

    pub async fn indexed_vectors(&self) -> Result<u64, VectorError> {
        let info = self.server.call(|| self.server.client.collection_info(&self.name)).await?;
        Ok(info.result.and_then(|r| r.indexed_vectors_count).unwrap_or(0))
    }
}
