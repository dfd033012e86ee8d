//! Raw HTTP to a node (ureq, every request bounded in time), and assertions
//! on the API's replies.

use std::time::Duration;

use serde_json::{Value as Json, json};
use stratosdb::client::SqlReply;
use stratosdb_query::StatementResult;

/// Longest one request may take: a node must answer (possibly with a 503)
/// well within it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent that reports every status as a reply, with bounded requests.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(Duration::from_secs(5)))
        .build()
        .new_agent()
}

/// One request with `agent`: (status, body), or why nothing was answered.
pub fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> Result<(u16, String), String> {
    let sent = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        ("PUT", b) => agent
            .put(url)
            .header("content-type", "application/json")
            .send(b.unwrap_or_default()),
        (_, b) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(b.unwrap_or_default()),
    };
    let mut response = sent.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .map_err(|e| format!("{method} {url}: reading the reply: {e}"))?;
    Ok((status, text))
}

/// One request: (status, body), or why nothing was answered.
pub fn try_raw(method: &str, url: &str, body: Option<&[u8]>) -> Result<(u16, String), String> {
    request(&agent(REQUEST_TIMEOUT), method, url, body)
}

/// One request that must be answered: (status, body).
pub fn raw(method: &str, url: &str, body: Option<&[u8]>) -> (u16, String) {
    try_raw(method, url, body).unwrap_or_else(|e| panic!("the node does not answer: {e}"))
}

pub fn parse(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error reply: the status, `{"error": {"code", "message"}}` and
/// the code; returns the message.
pub fn assert_error(reply: (u16, String), status: u16, code: &str) -> String {
    assert_eq!(reply.0, status, "{}", reply.1);
    let body = parse(&reply.1);
    let error = body["error"].as_object().expect("an error object");
    assert_eq!(error.len(), 2, "{body}");
    assert_eq!(error["code"], code, "{body}");
    error["message"].as_str().expect("a message").to_string()
}

/// The `code` of an error reply's body, if it is one.
pub fn error_code(text: &str) -> Option<String> {
    let body: Json = serde_json::from_str(text).ok()?;
    body["error"]["code"].as_str().map(str::to_string)
}

/// The body of `POST /v1/sql`.
pub fn sql_body(text: &str, consistency: &str) -> String {
    json!({"sql": text, "consistency": consistency}).to_string()
}

/// The body of `POST /v1/sql` with `"detail": true` (what the shell sends:
/// the reply also has `columns` or `message`).
pub fn sql_detail_body(text: &str, consistency: &str) -> String {
    json!({"sql": text, "consistency": consistency, "detail": true}).to_string()
}

/// A `POST /v1/sql` reply with detail, as the query layer's result (what the
/// embedded database gives); an error reply as its message, as the client
/// reports it.
pub fn statement_result(status: u16, text: &str) -> Result<StatementResult, String> {
    if !(200..300).contains(&status) {
        let body: Json = serde_json::from_str(text)
            .map_err(|e| format!("HTTP {status}, not an error body ({e}): {text}"))?;
        return match body["error"]["message"].as_str() {
            Some(message) => Err(message.to_string()),
            None => Err(format!("HTTP {status}, not an error body: {text}")),
        };
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        rows: Vec<stratosdb_engine::Value>,
        affected: u64,
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        message: Option<String>,
    }
    let reply: Detail = serde_json::from_str(text)
        .map_err(|e| format!("HTTP {status}: not a detailed SQL reply ({e}): {text}"))?;
    let reply = SqlReply {
        columns: reply.columns,
        rows: reply.rows,
        affected: reply.affected,
        message: reply.message,
    };
    Ok(reply.into_statement_result())
}

/// `POST /v1/sql`, linearizable.
pub fn sql(url: &str, text: &str) -> (u16, String) {
    let body = sql_body(text, "linearizable");
    raw("POST", &format!("{url}/v1/sql"), Some(body.as_bytes()))
}

/// `POST /v1/sql` that must answer 200; the reply as JSON.
pub fn sql_ok(url: &str, text: &str) -> Json {
    let (status, body) = sql(url, text);
    assert_eq!(status, 200, "{text}: {body}");
    parse(&body)
}
