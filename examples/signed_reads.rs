//! A fixed number of point reads against a running `stratosdb node --dev`,
//! signed or unsigned, one at a time: the load for counting what a signed
//! request costs the node (`valgrind --tool=callgrind`, `strace -c`;
//! BENCHMARKS.md, Proof of Traffic). Requests are signed before the first
//! is sent, so the client's signing is not part of the run.
//!
//!   signed_reads setup URL             # collection `t`, 200 documents, a funded payer
//!   signed_reads reads URL N signed    # or unsigned (billed to the dev account)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use stratosdb::client::Client;
use stratosdb_verifier::traffic::RequestSigner;

const DOCUMENTS: usize = 200;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let payer = RequestSigner::from_bytes(&[7; 32])?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["setup", url] => setup(url, &payer),
        ["reads", url, n, mode] => {
            let n: usize = n.parse().context("N: a count of requests")?;
            let signer = match mode {
                "signed" => Some(&payer),
                "unsigned" => None,
                _ => bail!("mode: signed or unsigned"),
            };
            reads(url, n, signer)
        }
        _ => bail!("usage: signed_reads setup URL | reads URL N signed|unsigned"),
    }
}

fn setup(url: &str, payer: &RequestSigner) -> anyhow::Result<()> {
    let client = Client::new(url)?;
    let mut tries = 0;
    while client.sql("CREATE COLLECTION t").is_err() {
        tries += 1;
        if tries > 600 {
            bail!("the collection was not created");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..DOCUMENTS {
        client.put(
            "t",
            &format!("d{i}"),
            &serde_json::json!({"n": i, "name": "x".repeat(200)}),
        )?;
    }
    client.deposit_signed(
        payer,
        1_000_000 * stratosdb_verifier::traffic::wei::WEI_PER_STOS,
    )?;
    Ok(())
}

fn reads(url: &str, n: usize, signer: Option<&RequestSigner>) -> anyhow::Result<()> {
    let cluster_id = Client::new(url)?.prices()?.cluster_id;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let path = format!("/v1/collections/t/docs/d{}", i % DOCUMENTS);
            let auth =
                signer.map(|s| s.sign_request(&cluster_id, "GET", &path, b"", now, rand::random()));
            (path, auth)
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut header_bytes = 0usize;
    for (path, auth) in &requests {
        let mut request = agent.get(format!("{url}{path}"));
        if let Some(auth) = auth {
            for (name, value) in auth.headers() {
                header_bytes += name.len() + value.len() + 4;
                request = request.header(name, value);
            }
        }
        let mut response = request.call()?;
        if response.status().as_u16() != 200 {
            bail!("{path}: {}", response.status());
        }
        response.body_mut().read_to_string()?;
    }
    println!("{n} requests, {header_bytes} bytes of signature headers");
    Ok(())
}
