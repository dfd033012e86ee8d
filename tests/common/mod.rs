//! Helpers shared by the whole-system tests: node processes, raw HTTP, and
//! clusters of real `stratosdb node` processes on 127.0.0.1.

#![allow(dead_code)] // each test file uses some of them

pub mod cluster;
pub mod disk;
pub mod faults;
pub mod heal;
pub mod http;
pub mod linearizability;
pub mod process;
pub mod traffic;
