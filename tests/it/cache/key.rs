//! The cache key cannot be collided or poisoned through the Host header: the exact
//! repro from issue 11 through a real child edge, shield and origin.

use super::shield::start;
use super::{Origin, get};
use crate::edge::trust_raw as raw;

const FRESH: &str = "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n";

#[tokio::test]
async fn a_host_carrying_a_path_cannot_plant_an_object_under_another_url() {
    let origin = Origin::start(&[("index.html", b"<h1>the index page</h1>")], "", FRESH);
    let tiered = start(&origin);
    let [a, b] = &tiered.children;
    // `curl -H 'Host: 127.0.0.1/assets' :8080/index.html`, at a child and at the shield.
    for edge in [a, &tiered.shield] {
        let request =
            "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1/assets\r\nConnection: close\r\n\r\n";
        let (status, head, body) = raw(edge.addr("http"), request).await;
        assert_eq!(status, 400, "{head}\n{body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "bad_host", "{body}");
    }
    assert_eq!(
        origin.count("/index.html").await,
        0,
        "refused, not forwarded"
    );
    // `curl :8080/assets/index.html`: the origin's own answer (404), not the index page.
    for edge in [a, b, &tiered.shield] {
        let got = get(edge, "/assets/index.html", &[]).await;
        assert_eq!(got.status, 404, "{got:?}");
        assert!(!got.body.starts_with(b"<h1>the index page"), "{got:?}");
    }
    // The real index page is still its own object, and host spellings fold into it.
    let first = get(a, "/index.html", &[]).await;
    assert_eq!((first.status, first.how().as_str()), (200, "MISS origin"));
    let request = "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1.:80\r\nConnection: close\r\n\r\n";
    let (status, head, body) = raw(a.addr("http"), request).await;
    assert_eq!(status, 200);
    assert!(head.contains("x-cache: hit"), "{head}");
    assert_eq!(body, "<h1>the index page</h1>");
    assert_eq!(origin.count("/index.html").await, 1);
}
