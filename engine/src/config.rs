//! The settings of an engine.

use crate::limits::{Limits, MAX_COMMAND_BYTES};

/// Settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub limits: Limits,
    /// Bytes of sled page cache.
    pub cache_bytes: u64,
    /// Largest raft command [`Shard::apply`] will decode.
    pub max_command_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            cache_bytes: 256 << 20,
            max_command_bytes: MAX_COMMAND_BYTES,
        }
    }
}
