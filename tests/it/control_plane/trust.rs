//! The authorization matrix of every node port: each route of the edge admin
//! listener, the sandbox API and the control plane's node routes, without a
//! credential (401), with someone else's (403), and with the right one (success),
//! each refusal the JSON error body. Nodes are the real daemons of a real deployment.

use reqwest::Method;
use serde_json::{Value, json};

use super::real::Real;
use super::*;
use crate::support::TestDir;

/// A body and the content type it is sent with.
type Body = Option<(&'static str, String)>;

fn json_body(value: Value) -> Body {
    Some(("application/json", value.to_string()))
}

async fn send(method: &Method, url: &str, bearer: Option<&str>, body: &Body) -> (u16, Value) {
    let mut request = client().request(method.clone(), url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some((content_type, body)) = body {
        request = request
            .header("content-type", *content_type)
            .body(body.clone());
    }
    let response = request.send().await.expect("request to a node");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `expected` with the JSON error body (`code`, non-empty `message`).
#[track_caller]
fn refused(what: &str, (status, body): (u16, Value), expected: u16) {
    assert_eq!(status, expected, "{what}: {body}");
    let code = match expected {
        401 => "unauthorized",
        403 => "forbidden",
        415 => "unsupported_media_type",
        _ => unreachable!(),
    };
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_route_needs_its_own_credential() {
    let dir = TestDir::new();
    let real = Real::start(&dir, &["edge-a", "edge-b"], true, "").await;
    let edge_a = real.edge("edge-a").credential();
    let edge_b = real.edge("edge-b").credential();
    let sandbox = real.sandbox.as_ref().unwrap();
    let sandbox_credential = sandbox.credential();
    let forged = format!("ebn1.edge-a.{}", "0".repeat(64));

    // Edge admin: every route but /healthz and /metrics.
    let admin = real.edge("edge-a").url("admin");
    for path in ["/healthz", "/metrics"] {
        let (status, _) = send(&Method::GET, &format!("{admin}{path}"), None, &None).await;
        assert_eq!(status, 200, "{path} is open");
    }
    let edge_routes: Vec<(Method, &str, Body, u16)> = vec![
        (Method::GET, "/stats", None, 200),
        (Method::POST, "/purge", json_body(json!({"all": true})), 200),
        // An empty body reloads the file the edge was started with.
        (
            Method::POST,
            "/reload",
            Some(("application/toml", String::new())),
            200,
        ),
        (Method::GET, "/no-such-route", None, 404),
        (Method::POST, "/drain", json_body(json!({})), 200),
    ];
    for (method, path, body, ok) in &edge_routes {
        let url = format!("{admin}{path}");
        let what = format!("edge-a {method} {path}");
        refused(&what, send(method, &url, None, body).await, 401);
        refused(&what, send(method, &url, Some(&forged), body).await, 401);
        // The operator token is not handed to nodes: an edge does not know it.
        refused(&what, send(method, &url, Some(OPERATOR), body).await, 401);
        refused(&what, send(method, &url, Some(SUBMITTER), body).await, 403);
        refused(&what, send(method, &url, Some(&edge_b), body).await, 403);
        refused(
            &what,
            send(method, &url, Some(&sandbox_credential), body).await,
            403,
        );
        if *method == Method::POST {
            let plain = Some(("text/plain", "{}".to_owned()));
            refused(&what, send(method, &url, Some(&edge_a), &plain).await, 415);
        }
        let (status, answer) = send(method, &url, Some(&edge_a), body).await;
        assert_eq!(status, *ok, "{what} with its credential: {answer}");
    }

    // Sandbox API: the job API also takes the submitter token; stats only the node's.
    let api = sandbox.url("api");
    for path in ["/healthz", "/metrics"] {
        let (status, _) = send(&Method::GET, &format!("{api}{path}"), None, &None).await;
        assert_eq!(status, 200, "{path} is open");
    }
    let wat = json!({"language": "wat", "source": "(module (func (export \"_start\")))"});
    let (status, accepted) = send(
        &Method::POST,
        &format!("{api}/v1/jobs"),
        Some(SUBMITTER),
        &json_body(wat.clone()),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let job = format!("/v1/jobs/{id}");
    let sandbox_routes: Vec<(Method, String, Body, bool, u16)> = vec![
        // (method, path, body, open to submitters, success status)
        (Method::GET, "/v1/stats".into(), None, false, 200),
        (Method::GET, "/v1/languages".into(), None, true, 200),
        (
            Method::POST,
            "/v1/jobs".into(),
            json_body(wat.clone()),
            true,
            202,
        ),
        (
            Method::POST,
            "/v1/run".into(),
            json_body(wat.clone()),
            true,
            200,
        ),
        (Method::GET, job.clone(), None, true, 200),
        (Method::GET, format!("{job}/events"), None, true, 400),
        (Method::DELETE, job.clone(), None, true, 409),
    ];
    for (method, path, body, submitters, ok) in &sandbox_routes {
        let url = format!("{api}{path}");
        let what = format!("sandbox {method} {path}");
        refused(&what, send(method, &url, None, body).await, 401);
        refused(&what, send(method, &url, Some(&forged), body).await, 403);
        refused(&what, send(method, &url, Some(OPERATOR), body).await, 401);
        refused(&what, send(method, &url, Some(&edge_a), body).await, 403);
        if *method == Method::POST {
            let plain = Some(("text/plain", wat.to_string()));
            refused(
                &what,
                send(method, &url, Some(SUBMITTER), &plain).await,
                415,
            );
        }
        let (status, answer) = send(method, &url, Some(SUBMITTER), body).await;
        if *submitters {
            // The job finished long ago (a `_start` that returns), so cancelling it
            // is a conflict; the events route without a WebSocket handshake is a 400.
            let expected = if path.ends_with(&id) && *method == Method::DELETE {
                409
            } else {
                *ok
            };
            assert_eq!(
                status, expected,
                "{what} with the submitter token: {answer}"
            );
        } else {
            refused(&what, (status, answer), 403);
        }
        let (status, answer) = send(method, &url, Some(&sandbox_credential), body).await;
        assert_eq!(status, *ok, "{what} with its credential: {answer}");
    }

    // A real WebSocket handshake: browsers cannot set headers, so the token may come
    // as `?access_token=`; without one the handshake is refused with 401.
    let events = format!("ws://{}/v1/jobs/{id}/events", sandbox.addr("api"));
    match tokio_tungstenite::connect_async(events.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401)
        }
        other => panic!("an unauthenticated handshake must be refused: {other:?}"),
    }
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{events}?access_token={SUBMITTER}"))
            .await
            .expect("handshake with the submitter token");
    use futures_util::StreamExt;
    let first = socket.next().await.expect("an event").expect("a message");
    assert!(first.to_text().unwrap().contains("result"), "{first:?}");

    // The origin has no route that changes state; `/_origin/stats` only reads, like
    // `/healthz`, and stays open (documented in ARCHITECTURE.md).
    let origin = real._origin.url("http");
    let (status, _) = send(
        &Method::GET,
        &format!("{origin}/_origin/stats"),
        None,
        &None,
    )
    .await;
    assert_eq!(status, 200);

    // The control plane's own calls to nodes carry their credentials.
    let cp = &real.cp;
    let (status, stats) = cp.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        stats["unreachable"].as_array().unwrap().is_empty(),
        "{stats}"
    );
    assert_eq!(stats["edges"]["reporting"], 2, "{stats}");

    // Control plane: a node may watch and report for itself, nothing else.
    let watch = |node: &str| cp.url(&format!("/v1/config/watch?after=0&timeout_ms=1000{node}"));
    refused(
        "watch",
        send(&Method::GET, &watch(""), None, &None).await,
        401,
    );
    refused(
        "watch",
        send(&Method::GET, &watch(""), Some(&forged), &None).await,
        401,
    );
    refused(
        "watch",
        send(&Method::GET, &watch(""), Some(SUBMITTER), &None).await,
        403,
    );
    refused(
        "watch for another node",
        send(&Method::GET, &watch("&node=edge-b"), Some(&edge_a), &None).await,
        403,
    );
    for query in ["", "&node=edge-a"] {
        let (status, answer) = send(&Method::GET, &watch(query), Some(&edge_a), &None).await;
        assert_eq!(status, 200, "watch{query}: {answer}");
        assert!(answer["toml"].is_string());
    }
    let report = |node: &str| json_body(json!({"node": node, "version": 1, "applied": true}));
    let status_url = cp.url("/v1/config/status");
    refused(
        "report",
        send(&Method::POST, &status_url, None, &report("edge-a")).await,
        401,
    );
    refused(
        "report",
        send(
            &Method::POST,
            &status_url,
            Some(SUBMITTER),
            &report("edge-a"),
        )
        .await,
        403,
    );
    refused(
        "report for another node",
        send(&Method::POST, &status_url, Some(&edge_a), &report("edge-b")).await,
        403,
    );
    let (status, answer) = send(&Method::POST, &status_url, Some(&edge_a), &report("edge-a")).await;
    assert_eq!(status, 204, "{answer}");
    // Everything else on the control plane is not a node's to do.
    for (method, path, body) in [
        (Method::GET, "/v1/config", None),
        (Method::PUT, "/v1/config", json_body(json!({"toml": ""}))),
        (Method::POST, "/v1/purge", json_body(json!({"all": true}))),
        (Method::GET, "/v1/stats", None),
        (Method::POST, "/v1/jobs", json_body(wat.clone())),
        (Method::POST, "/v1/nodes/edge-b/drain", None),
    ] {
        let what = format!("control plane {method} {path} as edge-a");
        refused(
            &what,
            send(&method, &cp.url(path), Some(&edge_a), &body).await,
            403,
        );
    }
}
