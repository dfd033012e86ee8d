//! Ethereum JSON-RPC, blocking: an alloy HTTP client driven by a small tokio
//! runtime that this backend owns, every call bounded in time.

use std::borrow::Cow;
use std::time::Duration;

use alloy::rpc::client::RpcClient;
use alloy::transports::RpcError;
use alloy::transports::http::reqwest::Url;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ChainError;

/// How long one call may take before the chain counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// An error the node answered with (a JSON-RPC error object).
#[derive(Clone, Debug)]
pub(crate) struct NodeError {
    pub code: i64,
    pub message: String,
}

pub(crate) struct Rpc {
    url: String,
    client: RpcClient,
    /// Always `Some` until dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Rpc {
    /// A client for `url` (plain `http://`: this build has no TLS).
    pub fn new(url: &str) -> Result<Rpc, ChainError> {
        let parsed: Url = url
            .parse()
            .map_err(|e| ChainError::Config(format!("RPC URL {url:?}: {e}")))?;
        // Errors and ChainInfo show the URL: never with its password.
        let mut shown = parsed.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        let shown = shown.to_string();
        if parsed.scheme() != "http" {
            return Err(ChainError::Config(format!(
                "RPC URL {shown:?}: only http:// is supported (put a TLS proxy on \
                 loopback in front of an https endpoint)"
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ChainError::Io {
                context: "starting the chain client's runtime".into(),
                source,
            })?;
        // The client spawns nothing at construction, but reqwest wants to be
        // built inside a runtime context.
        let client = {
            let _inside = runtime.enter();
            RpcClient::new_http(parsed)
        };
        Ok(Rpc {
            url: shown,
            client,
            runtime: Some(runtime),
        })
    }

    /// The URL, its password (if any) masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method`; a node's error answer is `Ok(Err(_))`, so a caller
    /// can look at it; no answer (or one that does not parse) is `Err`.
    pub fn try_call<P, R>(
        &self,
        method: &'static str,
        params: P,
    ) -> Result<Result<R, NodeError>, ChainError>
    where
        P: Serialize + Clone + std::fmt::Debug + Send + Sync + Unpin + 'static,
        R: DeserializeOwned + std::fmt::Debug + Send + Sync + Unpin + 'static,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ChainError::Misuse(
                "the Stratos chain backend blocks: call it from a plain thread \
                 (e.g. tokio::task::spawn_blocking), not from inside an async runtime",
            ));
        }
        let call = self.client.request::<P, R>(Cow::Borrowed(method), params);
        let Some(runtime) = &self.runtime else {
            return Err(ChainError::Misuse("the chain client was shut down"));
        };
        let answer = runtime.block_on(async { tokio::time::timeout(CALL_TIMEOUT, call).await });
        let unavailable =
            |why: String| ChainError::Unavailable(format!("{method} at {}: {why}", self.url));
        match answer {
            Err(_) => Err(unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(RpcError::ErrorResp(payload))) => Ok(Err(NodeError {
                code: payload.code,
                message: payload.message.to_string(),
            })),
            Ok(Err(RpcError::DeserError { err, .. })) => Err(ChainError::Integrity(format!(
                "{method} at {}: unexpected answer: {err}",
                self.url
            ))),
            Ok(Err(other)) => Err(unavailable(other.to_string())),
        }
    }

    /// Calls `method`; a node's error answer becomes [`ChainError::Refused`].
    pub fn call<P, R>(&self, method: &'static str, params: P) -> Result<R, ChainError>
    where
        P: Serialize + Clone + std::fmt::Debug + Send + Sync + Unpin + 'static,
        R: DeserializeOwned + std::fmt::Debug + Send + Sync + Unpin + 'static,
    {
        self.try_call(method, params)?
            .map_err(|e| ChainError::Refused(format!("{method}: {} (code {})", e.message, e.code)))
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context;
        // a node may well drop its chain there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        let rpc = Rpc::new("http://user:secret@127.0.0.1:8545/").unwrap();
        assert_eq!(rpc.url(), "http://user:***@127.0.0.1:8545/");
        let err = Rpc::new("https://user:secret@example.invalid/")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
