//! Job-end webhooks through the real sandbox: a receiver on 127.0.0.1 gets the final
//! view with a valid signature over timestamp and body; a receiver that keeps failing is
//! retried with backoff up to the configured attempts, every attempt in the job view; a
//! destination outside the allow-list is refused at submission; an `https://`
//! receiver is reached over TLS when its certificate chains to a configured CA, and
//! never when it does not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use edgebox_node::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use edgebox_wire::ErrorBody;
use edgebox_wire::sandbox::{CallbackState, JobState, JobView};
use serde_json::json;

use super::Sandbox;
use crate::support::{self, TestCa};

const KEY: &str = "test-callback-key-0123456789";

/// What a receiver got: the headers' verdict on each delivery and the bodies.
#[derive(Default)]
struct Received {
    deliveries: Vec<(bool, JobView)>,
    hits: usize,
}

/// Serves `POST /hook` on 127.0.0.1:0, answering `status`.
async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let timestamp: u64 = header(TIMESTAMP_HEADER).parse().unwrap_or(0);
                let valid = verify(KEY.as_bytes(), timestamp, &body, &header(SIGNATURE_HEADER));
                let mut state = state.lock().unwrap();
                state.hits += 1;
                if let Ok(view) = serde_json::from_slice::<JobView>(&body) {
                    state.deliveries.push((valid, view));
                }
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

fn settings() -> String {
    format!(
        "max_concurrent_jobs = 2\n[sandbox.callbacks]\nallow = [\"127.0.0.1/32\"]\nattempts = 3\n\
         backoff = \"100ms\"\ntimeout = \"2s\"\nsecret = \"{KEY}\"\n"
    )
}

/// Polls the job until its callback is no longer pending.
async fn callback_done(sandbox: &Sandbox, id: &str) -> JobView {
    support::eventually(
        "the callback to finish",
        Duration::from_secs(30),
        || async {
            let job = sandbox.job(id).await?;
            let done = job
                .head
                .callback
                .as_ref()
                .is_some_and(|callback| callback.state != CallbackState::Pending);
            done.then_some(job)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn results_are_posted_signed_and_failures_retried_then_given_up() {
    let sandbox = Sandbox::start_with(&settings());
    let (url, received) = receiver(StatusCode::OK).await;
    let id = sandbox
        .submit(json!({"language": "wat", "source": super::HELLO_WAT, "callback_url": url}))
        .await;
    let job = callback_done(&sandbox, &id).await;
    let callback = job.head.callback.as_ref().unwrap();
    assert_eq!(callback.state, CallbackState::Delivered, "{callback:?}");
    assert_eq!(callback.attempts.len(), 1);
    assert_eq!(callback.attempts[0].status, Some(200));
    {
        let received = received.lock().unwrap();
        assert_eq!(received.deliveries.len(), 1);
        let (valid, view) = &received.deliveries[0];
        assert!(valid, "the signature checks out");
        assert_eq!(view.head.id, id);
        assert_eq!(view.head.state, JobState::Succeeded);
        assert_eq!(view.stdout, "hello from wat\n");
    }

    let (url, failing) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let id = sandbox
        .submit(json!({"language": "wat", "source": super::HELLO_WAT, "callback_url": url}))
        .await;
    let job = callback_done(&sandbox, &id).await;
    let callback = job.head.callback.as_ref().unwrap();
    assert_eq!(callback.state, CallbackState::Failed, "{callback:?}");
    assert_eq!(callback.attempts.len(), 3, "{callback:?}");
    assert!(callback.attempts.iter().all(|a| a.status == Some(500)));
    assert_eq!(failing.lock().unwrap().hits, 3);

    // Nothing listening: connection errors are retried and recorded the same way.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let id = sandbox
        .submit(json!({"language": "wat", "source": super::HELLO_WAT, "callback_url": dead}))
        .await;
    let job = callback_done(&sandbox, &id).await;
    let callback = job.head.callback.as_ref().unwrap();
    assert_eq!(callback.state, CallbackState::Failed);
    assert!(
        callback
            .attempts
            .iter()
            .all(|a| a.status.is_none() && a.error.is_some())
    );

    // Destinations outside the allow-list, and URLs that are not http(s)://, are refused.
    for (url, code) in [
        ("http://10.0.0.1/hook", "callback_not_allowed"),
        (
            "http://169.254.169.254/latest/meta-data",
            "callback_not_allowed",
        ),
        ("ftp://127.0.0.1/hook", "invalid_callback_url"),
        ("not a url", "invalid_callback_url"),
    ] {
        let (status, error) = sandbox
            .post(
                "/v1/jobs",
                &json!({"language": "wat", "source": super::HELLO_WAT, "callback_url": url}),
            )
            .await;
        assert_eq!(status, 422, "{url}: {error}");
        let error: ErrorBody = serde_json::from_value(error).unwrap();
        assert_eq!(error.error.code, code, "{url}: {error:?}");
    }
}

/// A server config for 127.0.0.1 with a certificate `ca` signed.
fn server_config(ca: &TestCa) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    Arc::new(config)
}
/// Serves `POST /hook` over TLS on 127.0.0.1:0 (any path, answering 200); counts
/// handshakes that failed.
async fn tls_receiver(
    config: Arc<rustls::ServerConfig>,
) -> (String, Arc<Mutex<Received>>, Arc<Mutex<usize>>) {
    use http_body_util::BodyExt;
    let received = Arc::new(Mutex::new(Received::default()));
    let failed_handshakes = Arc::new(Mutex::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (state, failed) = (received.clone(), failed_handshakes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, state, failed) = (acceptor.clone(), state.clone(), failed.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    *failed.lock().unwrap() += 1;
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|value| value.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let (timestamp, signature) =
                                (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
                            let body = request.into_body().collect().await?.to_bytes();
                            let timestamp: u64 = timestamp.parse().unwrap_or(0);
                            let valid = verify(KEY.as_bytes(), timestamp, &body, &signature);
                            let mut state = state.lock().unwrap();
                            state.hits += 1;
                            if let Ok(view) = serde_json::from_slice::<JobView>(&body) {
                                state.deliveries.push((valid, view));
                            }
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Empty::<
                                Bytes,
                            >::new(
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://{addr}/hook"), received, failed_handshakes)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_callbacks_reach_receivers_whose_certificate_chains_to_the_configured_ca() {
    let trusted = TestCa::new("edgebox test callbacks CA");
    let dir = support::TestDir::new();
    let ca_file = dir.write("receivers-ca.pem", trusted.pem());
    let sandbox = Sandbox::start_with(&format!(
        "[sandbox.callbacks]\nallow = [\"127.0.0.1/32\"]\nattempts = 2\nbackoff = \"50ms\"\n\
         timeout = \"2s\"\nsecret = \"{KEY}\"\nca_file = \"{}\"\n",
        ca_file.display()
    ));

    let (url, received, _) = tls_receiver(server_config(&trusted)).await;
    let id = sandbox
        .submit(json!({"language": "wat", "source": super::HELLO_WAT, "callback_url": url}))
        .await;
    let job = callback_done(&sandbox, &id).await;
    let callback = job.head.callback.as_ref().unwrap();
    assert_eq!(callback.state, CallbackState::Delivered, "{callback:?}");
    assert_eq!(callback.attempts[0].status, Some(200));
    {
        let received = received.lock().unwrap();
        assert_eq!(received.deliveries.len(), 1);
        let (valid, view) = &received.deliveries[0];
        assert!(valid, "the signature checks out");
        assert_eq!(view.head.id, id);
    }

    // A receiver whose certificate another CA signed is never sent the result.
    let stranger = TestCa::new("someone else's CA");
    let (url, received, failed_handshakes) = tls_receiver(server_config(&stranger)).await;
    let id = sandbox
        .submit(json!({"language": "wat", "source": super::HELLO_WAT, "callback_url": url}))
        .await;
    let job = callback_done(&sandbox, &id).await;
    let callback = job.head.callback.as_ref().unwrap();
    assert_eq!(callback.state, CallbackState::Failed, "{callback:?}");
    assert_eq!(callback.attempts.len(), 2, "{callback:?}");
    for attempt in &callback.attempts {
        let error = attempt.error.as_deref().unwrap_or_default();
        assert!(
            attempt.status.is_none() && error.contains("certificate"),
            "{attempt:?}"
        );
    }
    assert_eq!(received.lock().unwrap().hits, 0);
    assert_eq!(*failed_handshakes.lock().unwrap(), 2);
}
