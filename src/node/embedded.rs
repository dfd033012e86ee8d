//! The single-node backend: the embedded [`Database`] (one engine, shard 0,
//! one replica) behind the [`Backend`] trait. This is what a node started
//! with neither `--peers` nor `--join` serves.
//!
//! Without a raft log there is no raft index: the shard's `applied` stays
//! what the engine stores (0 for a folder written only by local writes), and
//! every read is linearizable, `follower` reads included.

use stratosdb_engine::{Durability, EngineError, Op, Value};
use stratosdb_query::{Database, FindOptions};

use super::backend::{Backend, BackendError, PutOutcome, SqlOutcome};
use crate::api::{ClusterMap, CollectionPlacement, Consistency, NodeInfo, ReplicaInfo, ShardInfo};

/// Who this node is, for the cluster map.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub id: String,
    pub p2p: Option<String>,
    pub http: String,
    pub zone: Option<String>,
}

pub struct EmbeddedBackend {
    db: Database,
    node: NodeIdentity,
}

/// How many times a PUT retries when a concurrent writer created or deleted
/// the document between its insert and its replace attempt.
const PUT_ATTEMPTS: usize = 8;

impl EmbeddedBackend {
    pub fn new(db: Database, node: NodeIdentity) -> Self {
        EmbeddedBackend { db, node }
    }

    fn write_one(&self, op: Op) -> Result<u64, EngineError> {
        let result = self.db.shard().write(vec![op], Durability::Sync)?;
        Ok(result.outcomes.iter().map(|o| o.affected).sum())
    }
}

impl Backend for EmbeddedBackend {
    fn readiness(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn sql(&self, sql: &str, _consistency: Consistency) -> Result<SqlOutcome, BackendError> {
        Ok(SqlOutcome {
            result: self.db.execute_one(sql)?,
            reads: Vec::new(),
        })
    }

    fn put(&self, collection: &str, _id: &str, doc: Value) -> Result<PutOutcome, BackendError> {
        // Insert, else replace: exact about which one happened, with a retry
        // if a concurrent writer deleted the document in between.
        for _ in 0..PUT_ATTEMPTS {
            let insert = Op::Insert {
                collection: collection.to_string(),
                doc: doc.clone(),
            };
            match self.write_one(insert) {
                Ok(_) => return Ok(PutOutcome::Created),
                Err(EngineError::DuplicateId { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let replace = Op::Replace {
                collection: collection.to_string(),
                doc: doc.clone(),
            };
            match self.write_one(replace) {
                Ok(_) => return Ok(PutOutcome::Replaced),
                Err(EngineError::DocumentNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.write_one(Op::Upsert {
            collection: collection.to_string(),
            doc,
        })?;
        Ok(PutOutcome::Replaced)
    }

    fn get(
        &self,
        collection: &str,
        id: &str,
        _consistency: Consistency,
    ) -> Result<Value, BackendError> {
        self.db
            .shard()
            .get(collection, id)?
            .ok_or_else(|| BackendError::document_not_found(collection, id))
    }

    fn delete(&self, collection: &str, id: &str) -> Result<(), BackendError> {
        let affected = self.write_one(Op::Delete {
            collection: collection.to_string(),
            id: id.to_string(),
        })?;
        if affected == 0 {
            return Err(BackendError::document_not_found(collection, id));
        }
        Ok(())
    }

    fn find(
        &self,
        collection: &str,
        filter: &serde_json::Value,
        options: &FindOptions,
        _consistency: Consistency,
    ) -> Result<Vec<Value>, BackendError> {
        Ok(self.db.find(collection, filter, options)?)
    }

    fn cluster(&self) -> Result<ClusterMap, BackendError> {
        let shard = self.db.shard();
        let (applied, root) = shard.root_at_applied()?;
        let root = hex::encode(root);
        let me = &self.node;
        let names = shard.collections();
        let collections = names
            .iter()
            .map(|name| CollectionPlacement {
                name: name.clone(),
                shards: 1,
                replicas: 1,
            })
            .collect();
        // Every collection lives in the engine's shard 0, so each lists that
        // shard, with the shard's one root.
        let shards = names
            .iter()
            .map(|name| ShardInfo {
                collection: name.clone(),
                shard: shard.id(),
                leader: Some(me.id.clone()),
                replicas: vec![ReplicaInfo {
                    node: me.id.clone(),
                    applied,
                    root: root.clone(),
                }],
            })
            .collect();
        Ok(ClusterMap {
            self_id: me.id.clone(),
            nodes: vec![NodeInfo {
                id: me.id.clone(),
                p2p: me.p2p.clone(),
                http: me.http.clone(),
                zone: me.zone.clone(),
                up: true,
            }],
            collections,
            shards,
        })
    }

    fn shutdown(&self) -> Result<(), BackendError> {
        Ok(self.db.flush()?)
    }
}
