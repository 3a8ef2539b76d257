//! A small etcd v3 client over etcd's own JSON gateway (`POST /v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`), spoken with the reqwest client the control plane
//! already has.
//!
//! Why not a gRPC client crate: `etcd-client` (the common one) brings tonic, prost and
//! a build script that needs `protoc`, for the four calls this store makes. The
//! gateway is part of every etcd server since 3.3 (served on the client port, stable
//! under `/v3/` since 3.4), takes the same messages as the gRPC API in proto3 JSON
//! (bytes as base64, 64-bit integers as strings) and streams watch events as one JSON
//! object per line.
//!
//! Endpoints are tried in order; the one that answered last is tried first next time,
//! so a client follows the cluster when a member goes away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd at {endpoint}: {source}")]
    Http {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("etcd at {endpoint} answered {status}: {message}")]
    Server {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("etcd at {endpoint}: undecodable answer: {message}")]
    Decode { endpoint: String, message: String },
    #[error("etcd watch ended: {0}")]
    WatchEnded(String),
    #[error("etcd compacted the history past revision {0}")]
    Compacted(i64),
}

/// One etcd cluster.
pub struct Client {
    http: reqwest::Client,
    /// No overall timeout: a watch stays open for as long as it is watched.
    stream_http: reqwest::Client,
    endpoints: Vec<String>,
    preferred: AtomicUsize,
}

/// A key and its value as etcd keeps them.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// What one range read saw, and the store's revision at that moment.
#[derive(Debug)]
pub struct Range {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

/// One compare of a transaction.
pub enum Compare<'a> {
    /// The key's last modification was at this revision (0: the key does not exist).
    ModRevision(&'a [u8], i64),
    /// The key does not exist.
    Absent(&'a [u8]),
}

/// What a transaction did.
#[derive(Debug)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub revision: i64,
    /// The key-values of the range reads of the branch that ran.
    pub ranges: Vec<Vec<Kv>>,
}

/// One change seen by a watch.
#[derive(Debug)]
pub struct Event {
    pub deleted: bool,
    pub kv: Kv,
}

impl Client {
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let stream_http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .tcp_keepalive(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            stream_http,
            endpoints,
            preferred: AtomicUsize::new(0),
        })
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for offset in 0..self.endpoints.len() {
            let index = (start + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            let answer = async {
                let response = self
                    .http
                    .post(format!("{endpoint}{path}"))
                    .json(body)
                    .send()
                    .await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, bytes))
            }
            .await;
            match answer {
                Ok((status, bytes)) if status.is_success() => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes).map_err(|err| EtcdError::Decode {
                        endpoint: endpoint.clone(),
                        message: err.to_string(),
                    });
                }
                Ok((status, bytes)) => {
                    let error = server_error(endpoint, status.as_u16(), &bytes);
                    // A request etcd refused (too large, bad compare) fails the same on
                    // every member; only an unavailable member is worth skipping.
                    if status.is_server_error() {
                        last = Some(error);
                        continue;
                    }
                    return Err(error);
                }
                Err(source) => {
                    last = Some(EtcdError::Http {
                        endpoint: endpoint.clone(),
                        source,
                    })
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// The key `key`, or with `prefix` every key starting with it.
    pub async fn range(&self, key: &[u8], prefix: bool) -> Result<Range, EtcdError> {
        let mut body = json!({ "key": B64.encode(key) });
        if prefix {
            body["range_end"] = json!(B64.encode(prefix_end(key)));
        }
        let value = self.call("/v3/kv/range", &body).await?;
        let range: RawRange = decode(&self.endpoints[0], value)?;
        Ok(Range {
            revision: range.header.revision.0,
            kvs: range.kvs.into_iter().map(Kv::from).collect(),
        })
    }

    /// If every compare holds, puts `puts`; otherwise reads `failure_reads`.
    pub async fn txn(
        &self,
        compares: &[Compare<'_>],
        puts: &[(&[u8], &[u8])],
        failure_reads: &[&[u8]],
    ) -> Result<TxnOutcome, EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|compare| match compare {
                Compare::ModRevision(key, revision) => json!({
                    "key": B64.encode(key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": revision.to_string(),
                }),
                Compare::Absent(key) => json!({
                    "key": B64.encode(key), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0",
                }),
            })
            .collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|(key, value)| {
                json!({ "request_put": { "key": B64.encode(key), "value": B64.encode(value) } })
            })
            .collect();
        let failure: Vec<Value> = failure_reads
            .iter()
            .map(|key| json!({ "request_range": { "key": B64.encode(key) } }))
            .collect();
        let body = json!({ "compare": compare, "success": success, "failure": failure });
        let value = self.call("/v3/kv/txn", &body).await?;
        let txn: RawTxn = decode(&self.endpoints[0], value)?;
        Ok(TxnOutcome {
            succeeded: txn.succeeded,
            revision: txn.header.revision.0,
            ranges: txn
                .responses
                .into_iter()
                .filter_map(|response| response.response_range)
                .map(|range| range.kvs.into_iter().map(Kv::from).collect())
                .collect(),
        })
    }

    /// Puts one key unconditionally.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, EtcdError> {
        let body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        let value = self.call("/v3/kv/put", &body).await?;
        let put: RawHeaderOnly = decode(&self.endpoints[0], value)?;
        Ok(put.header.revision.0)
    }

    /// Opens a watch of every key under `prefix` from `start_revision` on.
    pub async fn watch(&self, prefix: &[u8], start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for offset in 0..self.endpoints.len() {
            let index = (start + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            match self
                .stream_http
                .post(format!("{endpoint}/v3/watch"))
                .json(&body)
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    return Ok(Watch {
                        endpoint: endpoint.clone(),
                        body: Box::pin(response.bytes_stream()),
                        buffer: Vec::new(),
                    });
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.unwrap_or_default();
                    last = Some(server_error(endpoint, status, &bytes));
                }
                Err(source) => {
                    last = Some(EtcdError::Http {
                        endpoint: endpoint.clone(),
                        source,
                    })
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An open watch: batches of events, one batch per etcd revision (a transaction's
/// puts arrive together).
pub struct Watch {
    endpoint: String,
    body: ByteStream,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next batch of events; an error when the watch ended for any reason.
    pub async fn next(&mut self) -> Result<Vec<Event>, EtcdError> {
        loop {
            if let Some(newline) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=newline).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let envelope: RawWatchEnvelope =
                    serde_json::from_slice(line).map_err(|err| EtcdError::Decode {
                        endpoint: self.endpoint.clone(),
                        message: err.to_string(),
                    })?;
                if let Some(error) = envelope.error {
                    return Err(EtcdError::WatchEnded(error.to_string()));
                }
                let Some(result) = envelope.result else {
                    continue;
                };
                if result.compact_revision.0 > 0 {
                    return Err(EtcdError::Compacted(result.compact_revision.0));
                }
                if result.canceled {
                    return Err(EtcdError::WatchEnded(
                        result.cancel_reason.unwrap_or_else(|| "canceled".into()),
                    ));
                }
                if result.events.is_empty() {
                    continue; // the creation notice, or progress
                }
                return Ok(result
                    .events
                    .into_iter()
                    .map(|event| Event {
                        deleted: event.kind.as_deref() == Some("DELETE"),
                        kv: Kv::from(event.kv),
                    })
                    .collect());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    // A line is one revision's events; bound what a broken peer can
                    // make us hold.
                    if self.buffer.len() + chunk.len() > 64 * 1024 * 1024 {
                        return Err(EtcdError::WatchEnded("watch message too large".into()));
                    }
                    self.buffer.extend_from_slice(&chunk);
                }
                Some(Err(source)) => {
                    return Err(EtcdError::Http {
                        endpoint: self.endpoint.clone(),
                        source,
                    });
                }
                None => return Err(EtcdError::WatchEnded("etcd closed the stream".into())),
            }
        }
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn server_error(endpoint: &str, status: u16, bytes: &[u8]) -> EtcdError {
    let message = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|value| {
            value
                .get("message")
                .or_else(|| value.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(200).collect());
    EtcdError::Server {
        endpoint: endpoint.to_owned(),
        status,
        message,
    }
}

fn decode<T: serde::de::DeserializeOwned>(endpoint: &str, value: Value) -> Result<T, EtcdError> {
    serde_json::from_value(value).map_err(|err| EtcdError::Decode {
        endpoint: endpoint.to_owned(),
        message: err.to_string(),
    })
}

/// A proto3 JSON int64: a string, or (from some encoders) a number.
#[derive(Debug, Default, Clone, Copy)]
struct Int64(i64);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => text.parse().map(Int64).map_err(serde::de::Error::custom),
            Value::Number(number) => number
                .as_i64()
                .map(Int64)
                .ok_or_else(|| serde::de::Error::custom("not an int64")),
            other => Err(serde::de::Error::custom(format!("not an int64: {other}"))),
        }
    }
}

/// proto3 JSON bytes: base64.
#[derive(Debug, Default)]
struct Bytes64(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        B64.decode(text.as_bytes())
            .map(Bytes64)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawHeader {
    #[serde(default)]
    revision: Int64,
}

#[derive(Debug, Deserialize)]
struct RawHeaderOnly {
    #[serde(default)]
    header: RawHeader,
}

#[derive(Debug, Deserialize)]
struct RawKv {
    #[serde(default)]
    key: Bytes64,
    #[serde(default)]
    value: Bytes64,
    #[serde(default)]
    mod_revision: Int64,
}

impl From<RawKv> for Kv {
    fn from(raw: RawKv) -> Self {
        Self {
            key: raw.key.0,
            value: raw.value.0,
            mod_revision: raw.mod_revision.0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawRange {
    #[serde(default)]
    header: RawHeader,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Debug, Deserialize)]
struct RawResponseOp {
    #[serde(default)]
    response_range: Option<RawRange>,
}

#[derive(Debug, Deserialize)]
struct RawTxn {
    #[serde(default)]
    header: RawHeader,
    /// Absent (proto3's default) when false.
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<RawResponseOp>,
}

#[derive(Debug, Deserialize)]
struct RawWatchEnvelope {
    #[serde(default)]
    result: Option<RawWatchResult>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RawWatchResult {
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: Option<String>,
    #[serde(default)]
    compact_revision: Int64,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    /// `PUT` is proto3's default and so absent; `DELETE` is written.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    kv: RawKv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/edgebox/"), b"/edgebox0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn decodes_the_gateways_proto3_json() {
        let txn: RawTxn = serde_json::from_str(
            r#"{"header":{"revision":"7"},"responses":[{"response_range":{"header":{"revision":"7"},
               "kvs":[{"key":"L2E=","create_revision":"2","mod_revision":"5","version":"1","value":"aGVsbG8="}],"count":"1"}}]}"#,
        )
        .unwrap();
        assert!(!txn.succeeded);
        assert_eq!(txn.header.revision.0, 7);
        let range = txn
            .responses
            .into_iter()
            .next()
            .unwrap()
            .response_range
            .unwrap();
        let kv = Kv::from(range.kvs.into_iter().next().unwrap());
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice(), kv.mod_revision),
            (&b"/a"[..], &b"hello"[..], 5)
        );
        let envelope: RawWatchEnvelope = serde_json::from_str(
            r#"{"result":{"header":{"revision":"3"},"events":[{"type":"DELETE","kv":{"key":"L2E=","mod_revision":"3"}}]}}"#,
        )
        .unwrap();
        let event = &envelope.result.unwrap().events[0];
        assert_eq!(event.kind.as_deref(), Some("DELETE"));
    }
}
