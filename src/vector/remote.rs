//! The server backend: a Qdrant server or cluster over gRPC (qdrant-client).
//! Collections are named `discord_<guild>_<model>`; the alias
//! `discord_<guild>` points at the active one and is re-pointed in one step.

use std::collections::HashMap;
use std::sync::Arc;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, Condition, CountPointsBuilder, CreateAliasBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter, GetPointsBuilder, PointStruct,
    PointsIdsList, Query, QueryPointsBuilder, Range, UpsertPointsBuilder, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};

use super::{slug, ChunkPayload, SearchFilter, StoredHit as Hit, StoredPoint as Point, VectorError, VECTOR};

pub fn collection_name(guild: u64, model: &str) -> String {
    format!("discord_{guild}_{}", slug(model).replace(['-', '.'], "_"))
}

pub fn alias_name(guild: u64) -> String {
    format!("discord_{guild}")
}

#[derive(Clone)]
pub struct Server {
    pub url: String,
    client: Arc<Qdrant>,
}

pub struct RemoteCollection {
    server: Server,
    name: String,
    pub dim: usize,
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
    pub fn connect(url: &str, api_key: Option<&str>) -> Result<Server, VectorError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key.map(str::to_owned))
            .timeout(std::time::Duration::from_secs(30))
            .skip_compatibility_check()
            .build()
            .map_err(|e| err(url, e))?;
        Ok(Server { url: url.into(), client: Arc::new(client) })
    }

    async fn dim_of(&self, name: &str) -> Result<Option<usize>, VectorError> {
        if !self.client.collection_exists(name).await.map_err(|e| err(&self.url, e))? {
            return Ok(None);
        }
        let info = self.client.collection_info(name).await.map_err(|e| err(&self.url, e))?;
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
        let name = collection_name(guild, model);
        match self.dim_of(&name).await? {
            Some(found) if found != dim => {
                return Err(VectorError::DimensionMismatch { name, model: model.into(), found, wanted: dim })
            }
            Some(_) => {}
            None => {
                let mut vectors = VectorsConfigBuilder::default();
                vectors.add_named_vector_params(VECTOR, VectorParamsBuilder::new(dim as u64, Distance::Cosine));
                self.client
                    .create_collection(CreateCollectionBuilder::new(&name).vectors_config(vectors))
                    .await
                    .map_err(|e| err(&self.url, e))?;
            }
        }
        for field in ChunkPayload::INDEXED {
            self.client
                .create_field_index(CreateFieldIndexCollectionBuilder::new(&name, field, FieldType::Integer).wait(true))
                .await
                .map_err(|e| err(&self.url, e))?;
        }
        Ok(RemoteCollection { server: self.clone(), name, dim })
    }

    pub async fn open_existing(&self, guild: u64, model: &str) -> Result<Option<RemoteCollection>, VectorError> {
        let name = collection_name(guild, model);
        Ok(self.dim_of(&name).await?.map(|dim| RemoteCollection { server: self.clone(), name, dim }))
    }

    pub async fn drop_collection(&self, guild: u64, model: &str) -> Result<(), VectorError> {
        let name = collection_name(guild, model);
        if self.client.collection_exists(&name).await.map_err(|e| err(&self.url, e))? {
            self.client.delete_collection(&name).await.map_err(|e| err(&self.url, e))?;
        }
        Ok(())
    }

    /// Points the guild's alias at the model's collection. Creating an alias
    /// that exists re-points it in one step on the server.
    pub async fn point_alias(&self, guild: u64, model: &str) -> Result<(), VectorError> {
        self.client
            .create_alias(CreateAliasBuilder::new(collection_name(guild, model), alias_name(guild)))
            .await
            .map_err(|e| err(&self.url, e))?;
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

    pub async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        let mut list = Vec::with_capacity(points.len());
        for p in points {
            let vectors: HashMap<String, Vec<f32>> = HashMap::from([(VECTOR.to_owned(), p.vector)]);
            list.push(PointStruct::new(p.id, vectors, json_to_payload(self.url(), p.payload)?));
        }
        self.server
            .client
            .upsert_points(UpsertPointsBuilder::new(&self.name, list).wait(true))
            .await
            .map_err(|e| err(self.url(), e))?;
        Ok(())
    }

    pub async fn delete(&self, ids: Vec<u64>) -> Result<(), VectorError> {
        let ids = PointsIdsList { ids: ids.into_iter().map(Into::into).collect() };
        self.server
            .client
            .delete_points(DeletePointsBuilder::new(&self.name).points(ids).wait(true))
            .await
            .map_err(|e| err(self.url(), e))?;
        Ok(())
    }

    pub async fn count(&self) -> Result<u64, VectorError> {
        let r = self
            .server
            .client
            .count(CountPointsBuilder::new(&self.name).exact(true))
            .await
            .map_err(|e| err(self.url(), e))?;
        Ok(r.result.map_or(0, |r| r.count))
    }

    pub async fn search(&self, vector: Vec<f32>, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, VectorError> {
        let mut q = QueryPointsBuilder::new(&self.name)
            .query(Query::new_nearest(vector))
            .using(VECTOR)
            .limit(limit as u64)
            .with_payload(true);
        let ids = |v: &[u64]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        let mut must = Vec::new();
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
        let r = self.server.client.query(q).await.map_err(|e| err(self.url(), e))?;
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
        let r = self
            .server
            .client
            .get_points(GetPointsBuilder::new(&self.name, ids).with_payload(true))
            .await
            .map_err(|e| err(self.url(), e))?;
        Ok(r.result
            .into_iter()
            .filter_map(|p| match p.id.and_then(|i| i.point_id_options) {
                Some(PointIdOptions::Num(id)) => Some((id, payload_to_json(p.payload))),
                _ => None,
            })
            .collect())
    }

    pub async fn vectors(&self, ids: Vec<u64>) -> Result<Vec<(u64, Vec<f32>)>, VectorError> {
        use qdrant_client::qdrant::vector_output::Vector;
        let ids: Vec<qdrant_client::qdrant::PointId> = ids.into_iter().map(Into::into).collect();
        let r = self
            .server
            .client
            .get_points(GetPointsBuilder::new(&self.name, ids).with_payload(false).with_vectors(true))
            .await
            .map_err(|e| err(self.url(), e))?;
        Ok(r.result
            .into_iter()
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
        let info = self.server.client.collection_info(&self.name).await.map_err(|e| err(self.url(), e))?;
        Ok(info.result.and_then(|r| r.indexed_vectors_count).unwrap_or(0))
    }
}
