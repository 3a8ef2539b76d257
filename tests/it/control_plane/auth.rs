//! Who may call what: every route without a token, with the wrong role, with the right
//! one; the OpenAPI document against the router; tokens that change with the config.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::support::TestDir;

#[tokio::test(flavor = "multi_thread")]
async fn auth_matrix_and_json_errors() {
    let dir = TestDir::new();
    let cp = Cp::start(&dir, &deployment(&[], None, ""));

    // Open reads.
    for path in [
        "/healthz",
        "/v1/nodes",
        "/v1/config/status",
        "/openapi.json",
        "/metrics",
        "/",
    ] {
        let (status, _) = cp.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // No token, unknown token, malformed header: 401 with a challenge.
    let response = cp.http.get(cp.url("/v1/config")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let (status, body) = cp
        .call(Method::GET, "/v1/config", Some("not-a-token-at-all"), None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let response = cp
        .http
        .get(cp.url("/v1/config"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Submitter: jobs yes (no sandbox in this deployment: 503, but past auth), the rest 403.
    let operator_only: [(Method, &str, Option<Value>); 7] = [
        (Method::GET, "/v1/config", None),
        (Method::PUT, "/v1/config", Some(json!({"toml": ""}))),
        (
            Method::POST,
            "/v1/config/validate",
            Some(json!({"toml": ""})),
        ),
        (Method::GET, "/v1/config/history", None),
        (Method::POST, "/v1/purge", Some(json!({"all": true}))),
        (Method::GET, "/v1/stats", None),
        (Method::POST, "/v1/nodes/origin-1/drain", None),
    ];
    for (method, path, body) in operator_only {
        let (status, response) = cp
            .call(method.clone(), path, Some(SUBMITTER), body.clone())
            .await;
        assert_error(status, &response, StatusCode::FORBIDDEN, "forbidden");
        let (status, _) = cp.call(method.clone(), path, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "print(1)"})),
        )
        .await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "no_sandbox");
    let (status, _) = cp
        .call(Method::POST, "/v1/jobs", None, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Operators may do everything, including jobs.
    let (status, _) = cp
        .call(Method::POST, "/v1/jobs", Some(OPERATOR), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // The generated token file: private, in the data dir, and it works.
    let token_path = dir.path().join("data/tokens/generated");
    let generated = std::fs::read_to_string(&token_path).expect("token file generated");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (status, _) = cp
        .call(Method::GET, "/v1/config", Some(generated.trim()), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bad bodies: malformed JSON, unknown fields, wrong content type, oversized.
    let bad = |body: &'static str, content_type: &'static str| {
        cp.http
            .post(cp.url("/v1/config/validate"))
            .bearer_auth(OPERATOR)
            .header("content-type", content_type)
            .body(body)
    };
    for (request, expected, code) in [
        (
            bad("{\"toml\": ", "application/json"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            bad("{\"toml\": \"\", \"extra\": 1}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            bad("{\"toml\": 5}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            bad("toml = 1", "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ] {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.expect("JSON error body");
        assert_error(status, &body, expected, code);
    }
    let huge = format!("{{\"toml\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    // Its own connection: the server answers before reading the whole body and then
    // closes that connection, which a pooled client could otherwise try to reuse. The
    // close can also reach the client while it is still writing the body (a broken pipe
    // before it reads the answer): that attempt says nothing either way, so it is made
    // again on a new connection, a bounded number of times.
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        match client()
            .put(cp.url("/v1/config"))
            .bearer_auth(OPERATOR)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
        {
            Ok(response) => break response,
            Err(error) if error.is_request() && attempts < 5 => continue,
            Err(error) => panic!("oversized PUT, attempt {attempts}: {error:?}"),
        }
    };
    let status = response.status();
    let body: Value = response.json().await.expect("JSON error body");
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );

    let (status, body) = cp.call(Method::GET, "/v1/nope", Some(OPERATOR), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no_route");
    let (status, body) = cp
        .call(Method::DELETE, "/v1/config", Some(OPERATOR), None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/config/rollback/abc",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_path");

    // Request ids: echoed when given, made up otherwise.
    let response = cp
        .http
        .get(cp.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = cp.http.get(cp.url("/healthz")).send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 36);

    // Still alive and counting.
    let metrics = cp
        .http
        .get(cp.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "edgebox_cp_requests_total{route=\"/v1/config\",method=\"GET\",status=\"403\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("edgebox_cp_config_version 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_matches_the_routes() {
    let dir = TestDir::new();
    let cp = Cp::start(&dir, &deployment(&[], None, ""));
    let (status, document) = cp.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    // The router's own list of what it registered.
    let (mut registered, _) = edgebox_control_plane::openapi_document();
    registered.sort();
    assert_eq!(documented, registered);

    // And over HTTP: every documented operation is routed (whatever it answers, it is
    // not the router's "no route" or "method not allowed")...
    for (method, path) in &documented {
        let concrete = path
            .replace("{version}", "1")
            .replace("{name}", "origin-1")
            .replace("{id}", "job-1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
        let mut request = cp
            .http
            .request(method.clone(), cp.url(&concrete))
            .bearer_auth(OPERATOR);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if concrete.ends_with("/watch") {
            request = cp
                .http
                .get(cp.url("/v1/config/watch?after=0"))
                .bearer_auth(OPERATOR);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}: {body}"
        );
        assert_ne!(body["error"]["code"], "no_route", "{method} {concrete}");
    }
    // ...and a path the document does not have is not routed.
    let (status, body) = cp
        .call(Method::GET, "/v1/config/everything", Some(OPERATOR), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no_route");
    // Operations carry their security requirement where they need a token.
    assert!(document["paths"]["/v1/config"]["put"]["security"].is_array());
    assert!(document["components"]["schemas"]["PutConfig"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_follow_the_config() {
    let dir = TestDir::new();
    let cp = Cp::start(&dir, &deployment(&[], None, ""));
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let rotated = "rotated-operator-secret-0123";
    let v2 = v1.replace(OPERATOR, rotated);
    assert_eq!(cp.put_config(&v2).await.0, StatusCode::OK);
    let (status, _) = cp
        .call(Method::GET, "/v1/config", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old secret is gone");
    let (status, body) = cp
        .call(Method::POST, "/v1/config/rollback/1", Some(rotated), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = cp
        .call(Method::GET, "/v1/config", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::OK, "rolled back to the first secret");
    // A token that cannot be resolved is a config error, and nothing changes.
    let broken = v1.replace(
        &format!("token = \"{SUBMITTER}\""),
        "token_env = \"EDGEBOX_TEST_SURELY_UNSET\"",
    );
    let (status, body) = cp.put_config(&broken).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_config",
    );
    assert_eq!(
        body["error"]["diagnostics"][0]["path"],
        "control_plane.tokens"
    );
    assert_eq!(cp.get("/v1/config").await.1["version"], 3);
}
