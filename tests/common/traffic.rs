//! Helpers of the Proof of Traffic tests: keys, signed raw requests.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratosdb_verifier::traffic::{RequestAuth, RequestSigner};

use super::http::agent;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A fresh random account.
pub fn new_signer() -> RequestSigner {
    loop {
        if let Ok(s) = RequestSigner::from_bytes(&rand::random()) {
            return s;
        }
    }
}

/// The cluster id of the node at `url`, from `GET /v1/prices`.
pub fn cluster_id(url: &str) -> [u8; 32] {
    let (status, text) = super::http::raw("GET", &format!("{url}/v1/prices"), None);
    assert_eq!(status, 200, "{text}");
    let prices: serde_json::Value = serde_json::from_str(&text).unwrap();
    hex::decode(prices["cluster_id"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// One request with the headers of `auth` (or none): status, body and the
/// receipt header.
pub fn send(
    method: &str,
    url: &str,
    path: &str,
    body: &[u8],
    auth: Option<&RequestAuth>,
) -> (u16, String, Option<String>) {
    let headers: Vec<(&str, String)> = auth.map(|a| a.headers().to_vec()).unwrap_or_default();
    send_headers(method, url, path, body, &headers)
}

/// One request (GET, or POST with a JSON body) with these headers as they
/// are: status, body and the receipt header.
pub fn send_headers(
    method: &str,
    url: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, String, Option<String>) {
    let agent = agent(Duration::from_secs(30));
    let full = format!("{url}{path}");
    let sent = match method {
        "GET" => {
            let mut r = agent.get(&full);
            for (n, v) in headers {
                r = r.header(*n, v);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(&full).header("content-type", "application/json");
            for (n, v) in headers {
                r = r.header(*n, v);
            }
            r.send(body)
        }
    };
    let mut response = sent.unwrap_or_else(|e| panic!("{method} {full}: {e}"));
    let status = response.status().as_u16();
    let receipt = response
        .headers()
        .get("x-stratos-receipt")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.body_mut().read_to_string().unwrap();
    (status, text, receipt)
}

/// Signs `POST path body` now with a fresh nonce.
pub fn sign(
    signer: &RequestSigner,
    cluster: &[u8; 32],
    method: &str,
    path: &str,
    body: &[u8],
) -> RequestAuth {
    signer.sign_request(cluster, method, path, body, now_ms(), rand::random())
}

/// Every receipt the node at `url` issued (its first 10 000).
pub fn node_receipts(url: &str) -> Vec<stratosdb_verifier::traffic::Receipt> {
    let (status, text) = super::http::raw(
        "GET",
        &format!("{url}/v1/receipts?from=1&limit=10000"),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let log: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(log["receipts"].clone()).unwrap()
}

/// Runs `stratosdb ARGS`, which must succeed; its stdout.
pub fn cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}: {text}{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
