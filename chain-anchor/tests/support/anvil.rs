#![allow(dead_code)]

//! A real EVM node for tests: anvil (npm package `@foundry-rs/anvil`, pinned
//! in the repository's package.json; `npm ci` installs it), on a free
//! loopback port with Stratos's chain id and London rules, killed with its
//! process group when dropped, also when a test fails. Shared by the chain
//! backend's tests and the node's (`#[path]`-included).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stratosdb_chain_anchor::AnchorPayload;
use stratosdb_chain_anchor::stratos::{StratosChain, StratosConfig, generate_key_file};

/// Stratos's EVM chain id.
pub const CHAIN_ID: u64 = 2048;

/// One anvil process; killed (with its whole process group: the npm
/// launcher starts the real binary as its child) on drop.
pub struct Anvil {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// The repository's root: the folder above the crate that holds package.json.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("package.json").exists())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")))
        .to_path_buf()
}

impl Anvil {
    pub fn start() -> Anvil {
        let bin = repo_root().join("node_modules/.bin/anvil");
        assert!(
            bin.exists(),
            "anvil is not installed ({} is missing): run `npm ci` in {} first \
             (the chain tests need Node.js and npm)",
            bin.display(),
            repo_root().display()
        );
        let mut last_log = String::new();
        // A port found free can be taken before anvil binds it: try again.
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("anvil.log")).expect("log file");
            let child = {
                use std::os::unix::process::CommandExt;
                Command::new(&bin)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--chain-id", &CHAIN_ID.to_string(), "--hardfork", "london"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log file"))
                    .stderr(log)
                    .process_group(0)
                    .spawn()
                    .expect("spawn anvil")
            };
            let mut anvil = Anvil { child, port, dir };
            if anvil.wait_ready(Duration::from_secs(60)) {
                return anvil;
            }
            last_log = anvil.log();
        }
        panic!("anvil did not start; its last log:\n{last_log}");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(answer) = self.try_rpc("eth_chainId", json!([])) {
                return answer["result"] == json!(format!("{CHAIN_ID:#x}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("anvil.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One JSON-RPC call over plain HTTP/1.0 (no chunking), bounded in time.
    pub fn try_rpc(&self, method: &str, params: Value) -> std::io::Result<Value> {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(json).map_err(std::io::Error::other)
    }

    /// A call that must succeed; its `result`.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        let answer = self
            .try_rpc(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params}: {e}"));
        assert!(answer.get("error").is_none(), "{method} {params}: {answer}");
        answer["result"].clone()
    }

    /// A fresh key file, its account funded with 100 STOS.
    pub fn funded_key(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        let address = generate_key_file(&path).expect("key file");
        let hundred_stos = format!("{:#x}", 100u128 * 10u128.pow(18));
        self.rpc("anvil_setBalance", json!([address, hundred_stos]));
        (path, address.to_string().to_lowercase())
    }

    pub fn connect(&self, key_file: &Path) -> StratosChain {
        StratosChain::connect(&StratosConfig {
            rpc_url: self.url(),
            chain_id: CHAIN_ID,
            key_file: key_file.to_path_buf(),
        })
        .expect("connect to anvil")
    }

    /// Every anchor on the chain sent by `address` for `epoch`, as
    /// (transaction hash, payload): a scan of every block.
    pub fn anchors_on_chain(&self, address: &str, epoch: u64) -> Vec<(String, AnchorPayload)> {
        let latest = u64::from_str_radix(
            self.rpc("eth_blockNumber", json!([]))
                .as_str()
                .expect("block number")
                .trim_start_matches("0x"),
            16,
        )
        .expect("hex block number");
        let mut found = Vec::new();
        for n in 0..=latest {
            let block = self.rpc("eth_getBlockByNumber", json!([format!("{n:#x}"), true]));
            for tx in block["transactions"].as_array().expect("transactions") {
                let (from, to) = (tx["from"].as_str(), tx["to"].as_str());
                if from != Some(address) || to != Some(address) {
                    continue;
                }
                let input = tx["input"]
                    .as_str()
                    .expect("input")
                    .trim_start_matches("0x");
                let bytes = hex::decode(input).expect("hex input");
                if let Ok(payload) = AnchorPayload::decode(&bytes)
                    && payload.epoch == epoch
                {
                    found.push((tx["hash"].as_str().expect("hash").to_string(), payload));
                }
            }
        }
        found
    }

    pub fn set_automine(&self, on: bool) {
        self.rpc("evm_setAutomine", json!([on]));
    }

    pub fn mine(&self) {
        self.rpc("evm_mine", json!([]));
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
