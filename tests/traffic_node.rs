//! Proof of Traffic on real node processes: who pays (signed requests, 401s,
//! the dev account), what a reply costs (receipts checked against the fee
//! formula and the bytes received), and the refusal of an unfunded account
//! (402). Every child is killed when its test ends, also when it fails.

use serde_json::{Value as Json, json};
use stratosdb::client::{Client, ClientError};
use stratosdb_verifier::traffic::{Address, DepositEntry, Prices, Receipt, RequestSigner};

mod common;
use common::cluster::TestCluster;
use common::http::{assert_error, parse, raw};
use common::traffic::{
    cli, cluster_id, new_signer, node_receipts, now_ms, send, send_headers, sign,
};

fn prices(url: &str) -> Prices {
    let (status, text) = raw("GET", &format!("{url}/v1/prices"), None);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn account(url: &str, address: &str) -> Json {
    let (status, text) = raw("GET", &format!("{url}/v1/accounts/{address}"), None);
    assert_eq!(status, 200, "{text}");
    parse(&text)
}

fn wei(v: &Json) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn a_dev_cluster_bills_the_dev_account_with_a_signed_receipt_per_reply() {
    let cluster = TestCluster::start_with(
        1,
        &[
            "--price-per-kib",
            "1024 wei",
            "--price-per-document",
            "7 wei",
        ],
    );
    let url = cluster.url(0).to_string();
    let p = prices(&url);
    assert_eq!((p.wei_per_kib, p.wei_per_document), (1024, 7));
    let reply = parse(&raw("GET", &format!("{url}/v1/prices"), None).1);
    assert_eq!(reply["wei_per_stos"], "1000000000000000000");
    assert_eq!(reply["cluster_id"].as_str().unwrap().len(), 64);

    // The client checks each receipt (signature, fee, bytes) as it keeps it.
    let client = Client::new(&url).unwrap().keeping_receipts(None).unwrap();
    client.sql("CREATE COLLECTION t").unwrap();
    for i in 0..5 {
        client
            .put(
                "t",
                &format!("d{i}"),
                &json!({"n": i, "pad": "x".repeat(100)}),
            )
            .unwrap();
    }
    let first = client.last_receipt().unwrap();
    let reply = client.sql("SELECT * FROM t").unwrap();
    assert_eq!(reply.rows.len(), 5);
    let receipt = client.last_receipt().unwrap();
    receipt.verify().unwrap();
    assert_eq!(
        receipt.payer.to_string(),
        "0x000000000000000000000000000000000000dE00"
    );
    assert_eq!(
        receipt.documents, 5,
        "a SELECT pays for the documents it returns"
    );
    assert_eq!(
        receipt.fee,
        u128::from(receipt.bytes) + 5 * 7,
        "1 wei a byte, 7 a document"
    );
    assert_eq!(
        receipt.sequence,
        first.sequence + 1,
        "sequences have no gaps"
    );
    let (count, fees) = client.receipt_totals();
    assert_eq!(count, 7);

    // The node's log holds the same receipts.
    let log: Json = parse(&raw("GET", &format!("{url}/v1/receipts?from=1"), None).1);
    assert_eq!(log["last"], 7);
    let logged: Vec<Receipt> = serde_json::from_value(log["receipts"].clone()).unwrap();
    assert_eq!(logged.len(), 7);
    assert_eq!(logged.last().unwrap(), &receipt);
    assert_eq!(logged.iter().map(|r| r.fee).sum::<u128>(), fees);

    // The dev account holds a reservation for it, and nothing is spent
    // before settlement.
    let dev = account(&url, "0x000000000000000000000000000000000000dE00");
    assert_eq!(dev["stratos_address"].as_str().unwrap()[..4], *"st1q");
    assert!(wei(&dev["reserved"]) >= fees, "{dev}");
    assert_eq!(
        wei(&dev["available"]) + wei(&dev["reserved"]),
        wei(&dev["deposited"])
    );

    // An error reply costs its bytes too; a malformed one is still answered.
    let (status, _, receipt) = send("POST", &url, "/v1/sql", br#"{"sql": "SELEC"}"#, None);
    assert_eq!(status, 400);
    let receipt: Receipt = serde_json::from_str(&receipt.expect("a receipt")).unwrap();
    assert_eq!(receipt.documents, 0);
}

#[test]
fn without_dev_only_signed_funded_requests_are_served() {
    let cluster = TestCluster::start_with(1, &["--no-dev"]);
    let url = cluster.url(0).to_string();
    let body = br#"{"sql": "CREATE COLLECTION t"}"#;

    // The public routes answer without a signature.
    for path in ["/v1/health", "/v1/prices", "/v1/cluster", "/v1/receipts"] {
        assert_eq!(raw("GET", &format!("{url}{path}"), None).0, 200, "{path}");
    }
    let who = new_signer();
    let fresh = account(&url, &who.address().to_string());
    assert_eq!(fresh["available"], "0");
    // The st1 form names the same account.
    let same = account(&url, &who.address().to_stratos());
    assert_eq!(same["address"], fresh["address"]);
    assert_error(
        raw("GET", &format!("{url}/v1/accounts/0x12"), None),
        400,
        "invalid_address",
    );

    // Unsigned: 401, saying how to sign.
    let (status, text, receipt) = send("POST", &url, "/v1/sql", body, None);
    let message = assert_error((status, text), 401, "unsigned");
    assert!(message.contains("--key-file"), "{message}");
    assert!(receipt.is_none());

    let cluster_id = cluster_id(&url);
    // Signed by an account with no funds: 402, naming the balance, the
    // price and how to deposit; nothing is created.
    let auth = sign(&who, &cluster_id, "POST", "/v1/sql", body);
    let (status, text, _) = send("POST", &url, "/v1/sql", body, Some(&auth));
    let message = assert_error((status, text), 402, "insufficient_funds");
    assert!(message.contains(&who.address().to_string()), "{message}");
    assert!(message.contains("0 wei available"), "{message}");
    assert!(message.contains("stratosdb account deposit"), "{message}");

    // A signature over another body, by another key, a stale or future
    // timestamp, a replayed nonce, malformed headers: 401 each.
    let other = sign(&who, &cluster_id, "POST", "/v1/sql", b"{}");
    let (s, t, _) = send("POST", &url, "/v1/sql", body, Some(&other));
    let message = assert_error((s, t), 401, "bad_signature");
    assert!(message.contains("not by"), "{message}");
    let mut forged = sign(&new_signer(), &cluster_id, "POST", "/v1/sql", body);
    forged.address = who.address();
    let (s, t, _) = send("POST", &url, "/v1/sql", body, Some(&forged));
    assert_error((s, t), 401, "bad_signature");
    for skew in [-3 * 60_000i64, 3 * 60_000] {
        let at = (now_ms() as i64 + skew) as u64;
        let stale = who.sign_request(&cluster_id, "POST", "/v1/sql", body, at, rand::random());
        let (s, t, _) = send("POST", &url, "/v1/sql", body, Some(&stale));
        let message = assert_error((s, t), 401, "stale_request");
        assert!(message.contains("120 s"), "{message}");
    }
    let wrong_cluster = sign(&who, &[9; 32], "POST", "/v1/sql", body);
    let (s, t, _) = send("POST", &url, "/v1/sql", body, Some(&wrong_cluster));
    assert_error((s, t), 401, "bad_signature");
    // The 402 above used `auth`'s nonce: sending it again is a replay.
    let (s, t, _) = send("POST", &url, "/v1/sql", body, Some(&auth));
    let message = assert_error((s, t), 401, "replayed_request");
    assert!(message.contains(&hex::encode(auth.nonce)), "{message}");
    let agent = common::http::agent(std::time::Duration::from_secs(10));
    let mut response = agent
        .post(&format!("{url}/v1/sql"))
        .header("x-stratos-address", who.address().to_string())
        .header("x-stratos-timestamp", "soon")
        .send(&body[..])
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let message = assert_error((response.status().as_u16(), text), 401, "bad_signature");
    assert!(message.contains("x-stratos-timestamp"), "{message}");

    // The client signs for its user, and says what the node refused.
    let client = Client::new(&url).unwrap().signing(who.clone());
    match client.sql("CREATE COLLECTION t") {
        Err(ClientError::Api {
            status: 402, code, ..
        }) => assert_eq!(code, "insufficient_funds"),
        other => panic!("expected 402, got {other:?}"),
    }
    let account_after = account(&url, &who.address().to_string());
    assert_eq!(account_after, fresh, "refused requests change nothing");
    let _: Address = who.address();
}

/// A payer the node already knows (its key remembered from earlier
/// requests) is checked as strictly as a new one: any change to what was
/// signed, a flipped v, a wrong address checksum is 401; other spellings of
/// the same headers (an upper-case address or nonce) are the same request.
#[test]
fn a_known_payers_request_is_refused_when_anything_signed_changes() {
    let cluster = TestCluster::start_with(1, &["--no-dev"]);
    let url = cluster.url(0).to_string();
    let cluster_id = cluster_id(&url);
    let who = new_signer();
    let client = Client::new(&url).unwrap().signing(who.clone());
    client
        .deposit_signed(&who, 1_000 * stratosdb_verifier::traffic::wei::WEI_PER_STOS)
        .unwrap();
    client.sql("CREATE COLLECTION t").unwrap();
    let path = "/v1/sql";
    let body = br#"{"sql": "SELECT * FROM t"}"#;

    // Served, and the receipt names the request by the hash the client
    // computed.
    let auth = sign(&who, &cluster_id, "POST", path, body);
    let (s, t, receipt) = send("POST", &url, path, body, Some(&auth));
    assert_eq!(s, 200, "{t}");
    let receipt: Receipt = serde_json::from_str(&receipt.expect("a receipt")).unwrap();
    assert_eq!(
        receipt.request_hash,
        auth.request_hash(&cluster_id, "POST", path, body)
    );
    assert_eq!(receipt.payer, who.address());

    let refused = |headers: Vec<(&str, String)>, method: &str, sent_path: &str, sent: &[u8]| {
        let (s, t, receipt) = send_headers(method, &url, sent_path, sent, &headers);
        assert!(receipt.is_none(), "a refused request has no receipt");
        assert_error((s, t), 401, "bad_signature")
    };
    // Signed for another method, path, query or body.
    let get = sign(&who, &cluster_id, "GET", path, body);
    let message = refused(get.headers().to_vec(), "POST", path, body);
    assert!(message.contains("not by"), "{message}");
    let other_path = sign(&who, &cluster_id, "POST", "/v1/sql?explain=1", body);
    refused(other_path.headers().to_vec(), "POST", path, body);
    let other_body = sign(&who, &cluster_id, "POST", path, br#"{"sql": "SELECT 1"}"#);
    refused(other_body.headers().to_vec(), "POST", path, body);
    // The timestamp or nonce changed after signing.
    let mut later = sign(&who, &cluster_id, "POST", path, body);
    later.timestamp_ms += 1;
    refused(later.headers().to_vec(), "POST", path, body);
    let mut renonced = sign(&who, &cluster_id, "POST", path, body);
    renonced.nonce[15] ^= 1;
    refused(renonced.headers().to_vec(), "POST", path, body);
    // v flipped (either spelling): the same (r, s) verifies against the
    // payer's key, but recovers another.
    for spelling in [0u8, 27] {
        let mut flipped = sign(&who, &cluster_id, "POST", path, body);
        flipped.signature[64] = spelling + (1 - (flipped.signature[64] - 27));
        let message = refused(flipped.headers().to_vec(), "POST", path, body);
        assert!(message.contains(&who.address().to_string()), "{message}");
    }
    // A mixed-case address whose checksum is wrong, and a signature header
    // one digit short: named.
    let fresh = sign(&who, &cluster_id, "POST", path, body);
    let mut headers = fresh.headers().to_vec();
    let spelled = who.address().to_string();
    let at = spelled[2..]
        .find(|c: char| c.is_ascii_alphabetic())
        .expect("an address with a letter")
        + 2;
    let mut wrong: Vec<char> = spelled.chars().collect();
    wrong[at] = if wrong[at].is_ascii_uppercase() {
        wrong[at].to_ascii_lowercase()
    } else {
        wrong[at].to_ascii_uppercase()
    };
    let wrong: String = wrong.into_iter().collect();
    let mixed = wrong[2..].chars().any(|c| c.is_ascii_lowercase())
        && wrong[2..].chars().any(|c| c.is_ascii_uppercase());
    if mixed {
        headers[0].1 = wrong;
        let message = refused(headers.clone(), "POST", path, body);
        assert!(message.contains("x-stratos-address"), "{message}");
        assert!(message.contains("checksum"), "{message}");
    }
    headers = fresh.headers().to_vec();
    headers[3].1.pop();
    let message = refused(headers, "POST", path, body);
    assert!(message.contains("x-stratos-signature"), "{message}");

    // The same headers spelled in upper case: the same request, served once.
    let upper = sign(&who, &cluster_id, "POST", path, body);
    let mut headers = upper.headers().to_vec();
    headers[0].1 = format!("0x{}", who.address().to_lower_hex()[2..].to_uppercase());
    headers[2].1 = headers[2].1.to_uppercase();
    let (s, t, _) = send_headers("POST", &url, path, body, &headers);
    assert_eq!(s, 200, "{t}");
    let (s, t, _) = send("POST", &url, path, body, Some(&upper));
    assert_error((s, t), 401, "replayed_request");
}

/// Many signed requests at once from three known payers, a quarter of them
/// tampered (v flipped, or the timestamp changed after signing): the node
/// checks concurrent signatures of known payers as one batch, and a batch
/// with a bad member one by one, so each request gets its own answer: the
/// good ones served with a receipt, each bad one refused with its own 401.
#[test]
fn concurrent_signed_requests_with_tampered_ones_are_each_answered_on_their_own() {
    let cluster = TestCluster::start_with(1, &["--no-dev"]);
    let url = cluster.url(0).to_string();
    let cluster_id = cluster_id(&url);
    let payers: Vec<RequestSigner> = (0..3).map(|_| new_signer()).collect();
    for payer in &payers {
        // A signed deposit: the node learns the payer's key.
        Client::new(&url)
            .unwrap()
            .signing(payer.clone())
            .deposit_signed(
                payer,
                1_000 * stratosdb_verifier::traffic::wei::WEI_PER_STOS,
            )
            .unwrap();
    }
    Client::new(&url)
        .unwrap()
        .signing(payers[0].clone())
        .sql("CREATE COLLECTION t")
        .unwrap();
    let path = "/v1/sql";
    let body = br#"{"sql": "SELECT * FROM t"}"#;
    std::thread::scope(|scope| {
        for thread in 0..16usize {
            let (url, payers, cluster_id) = (&url, &payers, &cluster_id);
            scope.spawn(move || {
                for i in 0..6usize {
                    let payer = &payers[(thread + i) % payers.len()];
                    let mut auth = sign(payer, cluster_id, "POST", path, body);
                    let bad = (thread * 6 + i) % 4 == 3;
                    if bad && i % 2 == 0 {
                        auth.signature[64] = 27 + (1 - (auth.signature[64] - 27));
                    } else if bad {
                        auth.timestamp_ms += 1;
                    }
                    let (s, t, receipt) = send("POST", url, path, body, Some(&auth));
                    if bad {
                        assert!(receipt.is_none(), "a refused request has no receipt");
                        let message = assert_error((s, t), 401, "bad_signature");
                        let payer = payer.address().to_string();
                        assert!(message.contains(&payer), "{message}");
                    } else {
                        assert_eq!(s, 200, "{t}");
                        assert!(receipt.is_some(), "a served request has a receipt");
                    }
                }
            });
        }
    });
}

/// A deposit body for `signer`'s account.
fn authorization(signer: &RequestSigner, cluster: [u8; 32], amount: u128) -> Json {
    let nonce: [u8; 16] = rand::random();
    let entry = DepositEntry::sign(signer, cluster, amount, nonce);
    json!({
        "cluster_id": hex::encode(cluster),
        "account": signer.address().to_string(),
        "amount": amount.to_string(),
        "nonce": hex::encode(nonce),
        "signature": format!("0x{}", hex::encode(entry.signature)),
    })
}

#[test]
fn deposits_are_credited_once_and_two_nodes_never_serve_past_the_balance() {
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "--no-dev",
            "--price-per-kib",
            "1024 wei",
            "--price-per-document",
            "1000 wei",
        ],
    );
    let url = cluster.url(0).to_string();
    let cluster_id = cluster_id(&url);
    let who = new_signer();
    let me = who.address().to_string();
    let deposits = format!("{url}/v1/accounts/{me}/deposits");

    // A signed deposit on the local ledger: credited once.
    let body = authorization(&who, cluster_id, 150_000).to_string();
    let (status, text) = raw("POST", &deposits, Some(body.as_bytes()));
    assert_eq!(status, 200, "{text}");
    let reply = parse(&text);
    assert!(
        reply["reference"].as_str().unwrap().starts_with("ledger:"),
        "{reply}"
    );
    assert_eq!(reply["account"]["available"], "150000");
    assert_error(
        raw("POST", &deposits, Some(body.as_bytes())),
        409,
        "deposit_credited",
    );
    // Through another node: the same deposit, the same refusal.
    let elsewhere = format!("{}/v1/accounts/{me}/deposits", cluster.url(1));
    assert_error(
        raw("POST", &elsewhere, Some(body.as_bytes())),
        409,
        "deposit_credited",
    );
    // Refused and changing nothing: another account's deposit on this path,
    // a signature by another key, another cluster, malformed JSON.
    let theirs = authorization(&new_signer(), cluster_id, 1).to_string();
    assert_error(
        raw("POST", &deposits, Some(theirs.as_bytes())),
        400,
        "invalid_deposit",
    );
    let mut forged = authorization(&new_signer(), cluster_id, 10_000);
    forged["account"] = json!(me);
    let forged = forged.to_string();
    let message = assert_error(
        raw("POST", &deposits, Some(forged.as_bytes())),
        400,
        "invalid_deposit",
    );
    assert!(message.contains("not signed by"), "{message}");
    let other_cluster = authorization(&who, [3; 32], 10_000).to_string();
    assert_error(
        raw("POST", &deposits, Some(other_cluster.as_bytes())),
        400,
        "invalid_deposit",
    );
    assert_error(raw("POST", &deposits, Some(b"{")), 400, "invalid_request");
    // And a second real one, through the client.
    let client0 = Client::new(&url).unwrap().signing(who.clone());
    let second = client0.deposit_signed(&who, 50_000).unwrap();
    assert_eq!(second.account.available, 200_000);
    assert_eq!(account(cluster.url(2), &me)["deposited"], "200000");

    client0.sql("CREATE COLLECTION t").unwrap();
    let values: Vec<String> = (0..20)
        .map(|i| format!("('{{\"_id\": \"d{i}\", \"n\": {i}}}')"))
        .collect();
    client0
        .sql(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .unwrap();

    // Two nodes serve the same payer at once until its funds run out: each
    // stops with 402, and together they never served more than was
    // deposited (reads never overspend).
    let readers: Vec<_> = [0, 1]
        .into_iter()
        .map(|i| {
            let client = Client::new(cluster.url(i)).unwrap().signing(who.clone());
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    match client.sql("SELECT * FROM t LIMIT 5") {
                        Ok(reply) => assert_eq!(reply.rows.len(), 5),
                        Err(ClientError::Api { status: 402, .. }) => {
                            return (true, client.receipt_totals());
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                (false, client.receipt_totals())
            })
        })
        .collect();
    let mut served = client0.receipt_totals().1;
    for reader in readers {
        let (refused, (count, fees)) = reader.join().unwrap();
        assert!(refused, "a reader was never refused");
        assert!(count > 0);
        served += fees;
    }
    assert!(
        served <= 200_000,
        "the nodes served {served} wei of a 200000 wei balance"
    );
    // Every node's log agrees with what the clients kept.
    let mut logged = 0u128;
    for i in 0..3 {
        let receipts = node_receipts(cluster.url(i));
        logged += receipts
            .iter()
            .filter(|r| r.payer == who.address())
            .map(|r| r.fee)
            .sum::<u128>();
    }
    assert_eq!(logged, served);

    // Read in pages smaller than the log, the same receipts in order (the
    // auditor pages the same way through logs longer than one reply).
    let whole = node_receipts(cluster.url(0));
    let paged = client0
        .node_receipts_range(1, whole.len() as u64 + 5, 3)
        .unwrap();
    assert!(whole.len() > 6, "too few receipts to page: {}", whole.len());
    assert_eq!(paged, whole);
    let middle = client0.node_receipts_range(4, 6, 2).unwrap();
    assert_eq!(
        middle.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [4, 5, 6]
    );

    // A node killed mid-run keeps numbering its receipts without a gap, and
    // a fresh deposit makes the account servable again.
    let last = parse(&raw("GET", &format!("{}/v1/receipts", cluster.url(1)), None).1)["last"]
        .as_u64()
        .unwrap();
    cluster.kill(1);
    cluster.restart(1);
    let client1 = Client::new(cluster.url(1)).unwrap().signing(who.clone());
    client1.deposit_signed(&who, 100_000).unwrap();
    client1.sql("SELECT * FROM t WHERE _id = 'd3'").unwrap();
    assert_eq!(client1.last_receipt().unwrap().sequence, last + 1);
}

#[test]
fn a_withdrawal_is_signed_debited_once_and_paid_out_on_the_ledger() {
    let cluster = TestCluster::start_with(1, &["--no-dev"]);
    let url = cluster.url(0).to_string();
    let cluster_id = cluster_id(&url);
    let who = new_signer();
    let me = who.address().to_string();
    let client = Client::new(&url).unwrap().signing(who.clone());
    client.deposit_signed(&who, 1000).unwrap();
    let path = format!("/v1/accounts/{me}/withdrawals");
    let body = br#"{"amount": "400"}"#;

    // Unsigned, or signed by another account: refused, nothing debited.
    let (s, t, _) = send("POST", &url, &path, body, None);
    assert_error((s, t), 401, "unsigned");
    let other = sign(&new_signer(), &cluster_id, "POST", &path, body);
    let (s, t, _) = send("POST", &url, &path, body, Some(&other));
    assert_error((s, t), 401, "not_the_account");
    // More than is available: 402.
    match client.withdraw(1500) {
        Err(ClientError::Api {
            status: 402, code, ..
        }) => assert_eq!(code, "insufficient_funds"),
        other => panic!("expected 402, got {other:?}"),
    }
    assert_eq!(account(&url, &me)["withdrawn"], "0");

    // A signed withdrawal: debited at once; the same signed request again
    // is a replay.
    let auth = sign(&who, &cluster_id, "POST", &path, body);
    let (s, t, _) = send("POST", &url, &path, body, Some(&auth));
    assert_eq!(s, 200, "{t}");
    let reply = parse(&t);
    assert_eq!(reply["account"]["withdrawn"], "400");
    assert_eq!(reply["account"]["available"], "600");
    assert_eq!(reply["payout"]["status"], "pending");
    let (s, t, _) = send("POST", &url, &path, body, Some(&auth));
    assert_error((s, t), 401, "replayed_request");

    // Paid out on the ledger, once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let paid = loop {
        let payouts = client.payouts(&who.address()).unwrap();
        assert_eq!(payouts.len(), 1);
        if let Some(r) = &payouts[0].reference {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not paid out: {payouts:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(paid.starts_with("ledger:"), "{paid}");
    let report =
        stratosdb_chain_anchor::verify_ledger(&cluster.data(0).join("ledger"), &mut |_, _| {})
            .unwrap();
    assert!(report.ok());
    assert_eq!(
        report.kinds.get(&4),
        Some(&1),
        "one payout entry: {:?}",
        report.kinds
    );
    let after = account(&url, &me);
    assert_eq!(
        (after["deposited"].clone(), after["withdrawn"].clone()),
        (json!("1000"), json!("400"))
    );

    // The CLI: a new account's key file, a deposit, a withdrawal.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let run = |args: &[&str]| cli(args);
    let key_arg = key.to_str().unwrap();
    let created = run(&["account", "new", "--key-file", key_arg]);
    assert!(created.contains("stratos address  st1"), "{created}");
    run(&[
        "account",
        "deposit",
        "--connect",
        &url,
        "--key-file",
        key_arg,
        "5000 wei",
    ]);
    let out = run(&[
        "account",
        "withdraw",
        "--connect",
        &url,
        "--key-file",
        key_arg,
        "1200 wei",
    ]);
    assert!(out.contains("paid out to 0x"), "{out}");
    let balance = run(&[
        "account",
        "balance",
        "--connect",
        &url,
        "--key-file",
        key_arg,
    ]);
    assert!(balance.contains("(3800 wei)"), "{balance}");
    assert!(balance.contains("(1200 wei)"), "{balance}");

    // The shell signs with the key file and keeps every receipt, checked
    // (this cluster's default prices want more than 3800 wei).
    run(&[
        "account",
        "deposit",
        "--connect",
        &url,
        "--key-file",
        key_arg,
        "0.001",
    ]);
    let receipts = dir.path().join("r.jsonl");
    let out = run(&[
        "shell",
        "--connect",
        &url,
        "--key-file",
        key_arg,
        "--receipts",
        receipts.to_str().unwrap(),
        "--format",
        "json",
        "-c",
        "CREATE COLLECTION s; INSERT INTO s VALUES ('{\"_id\": \"a\"}'); SELECT * FROM s",
    ]);
    assert!(out.contains("\"_id\":\"a\""), "{out}");
    let kept: Vec<Receipt> = std::fs::read_to_string(&receipts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kept.len(), 3, "one receipt per statement");
    let shown = run(&["account", "show", "--key-file", key_arg]);
    for r in &kept {
        r.verify().unwrap();
        assert!(shown.contains(&r.payer.to_string()), "{shown}");
    }
    // Without the key file, the same shell is refused (401).
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args(["shell", "--connect", &url, "-c", "SELECT * FROM s"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("not signed"), "{text}");
}
