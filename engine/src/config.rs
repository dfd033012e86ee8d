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
    /// Bytes of applied writes buffered in memory before they are written
    /// to sled together (`storage/write_back.rs`); 0 writes each batch
    /// through.
    pub write_buffer_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            cache_bytes: 256 << 20,
            max_command_bytes: MAX_COMMAND_BYTES,
            write_buffer_bytes: 4 << 20,
        }
    }
}
