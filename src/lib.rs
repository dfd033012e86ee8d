//! The `stratosdb` package as a library: the node (its backend trait, the
//! embedded backend, the HTTP/JSON API) and the blocking Rust client that the
//! shell and the tests use. The binary (`src/main.rs`) wires them to the CLI.

pub mod api;
pub mod client;
pub mod embedded_anchor;
pub mod node;
pub mod rows;
pub mod verified;
