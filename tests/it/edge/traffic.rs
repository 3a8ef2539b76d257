//! Rate limits and the access log through a real edge in front of a real origin daemon:
//! 429 with `Retry-After` after the burst, independent clients, `X-Forwarded-For` only
//! from trusted proxies, reloads, counters, log lines in each format, SIGHUP reopening,
//! and an unwritable log reported while requests keep being served.

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::{Edge, Origin, get};
use crate::support::{TestDir, edgebox, eventually, signal};

const RULES: &str = "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n";

fn origin() -> Origin {
    Origin::start(
        &[("/a.txt", b"aaaa"), ("/b.txt", b"bbbb"), ("/api/x", b"x")],
        "",
        RULES,
    )
}

/// The body of GET `path` on the edge's admin listener.
async fn admin(edge: &Edge, path: &str) -> String {
    let url = format!("{}{path}", edge.daemon.url("admin"));
    let response = edge.daemon.authed_client().get(url).send().await.unwrap();
    response.text().await.unwrap()
}

async fn healthz(edge: &Edge) -> serde_json::Value {
    serde_json::from_str(&admin(edge, "/healthz").await).unwrap()
}

/// A request without extra headers, for [`statuses`].
const NONE: &[(&str, &str)] = &[];

/// The statuses of GET `path`, one request per header set, in order.
async fn statuses(edge: &Edge, path: &str, requests: &[&[(&str, &str)]]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for headers in requests {
        statuses.push(get(&edge.daemon, path, headers).await.status);
    }
    statuses
}

/// Rewrites the edge's config file with `from` replaced by `to` and reloads it.
async fn reload_replacing(edge: &Edge, from: &str, to: &str) {
    let text = std::fs::read_to_string(&edge.config).unwrap();
    assert!(text.contains(from), "test bug: {from:?} not in the config");
    let text = text.replacen(from, to, 1);
    std::fs::write(&edge.config, &text).unwrap();
    let (status, body) = crate::edge::reload(&edge.daemon, text).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_burst_clients_get_429_with_retry_after_even_on_cache_hits() {
    let origin = origin();
    let edge = Edge::start(
        &origin,
        "",
        "[[edge.rate_limit.rules]]\npattern = \"/**\"\nrate = 1\nper = \"1m\"\nburst = 3\n",
    );
    // A miss, then two hits (answered by the fast path), then nothing is left.
    let mut how = Vec::new();
    for _ in 0..3 {
        let got = get(&edge.daemon, "/a.txt", &[]).await;
        assert_eq!(got.status, 200);
        how.push(got.how());
    }
    assert_eq!(how, ["MISS origin", "HIT l1", "HIT l1"]);
    let got = get(&edge.daemon, "/a.txt", &[]).await;
    assert_eq!(got.status, 429);
    let retry_after: u64 = got
        .header("retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(got.header("content-type"), "application/json");
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again")
    );
    assert!(!got.header("x-request-id").is_empty());

    let limits = crate::edge::stats(&edge.daemon).await.rate_limit;
    assert_eq!((limits.checked, limits.limited), (4, 1));
    assert_eq!(limits.rules[0].pattern, "/**");
    assert_eq!((limits.rules[0].checked, limits.rules[0].limited), (4, 1));
    let text = admin(&edge, "/metrics").await;
    assert!(
        text.contains("edgebox_edge_rate_limited_total{node=\"edge\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("edgebox_edge_rate_limit_checked_total{node=\"edge\"} 4"),
        "{text}"
    );
    assert!(
        text.contains(
            "edgebox_edge_rate_limit_rule_limited_total{node=\"edge\",rule=\"/**\",key=\"ip\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_routes_are_limited_independently() {
    let origin = origin();
    let edge = Edge::start(
        &origin,
        "",
        "[[edge.rate_limit.rules]]\npattern = \"/api/**\"\nrate = 1\nper = \"1m\"\nburst = 1\n\
         key = \"header\"\nheader = \"X-Api-Key\"\n",
    );
    let (alice, bob): (&[_], &[_]) = (&[("x-api-key", "alice")], &[("x-api-key", "bob")]);
    assert_eq!(
        statuses(&edge, "/api/x", &[alice, alice, bob, bob]).await,
        [200, 429, 200, 429]
    );
    // No rule matches elsewhere.
    assert_eq!(statuses(&edge, "/a.txt", &[alice; 5]).await, [200; 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let origin = origin();
    let edge = Edge::start(
        &origin,
        "",
        "[edge]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\n\
         [[edge.rate_limit.rules]]\nrate = 1\nper = \"1m\"\nburst = 1\n",
    );
    let one: &[_] = &[("x-forwarded-for", "198.51.100.1")];
    let two: &[_] = &[("x-forwarded-for", "198.51.100.2")];
    // The test client (127.0.0.1) is not trusted: both requests are its own.
    assert_eq!(statuses(&edge, "/a.txt", &[one, two]).await, [200, 429]);

    reload_replacing(&edge, "[\"10.0.0.0/8\"]", "[\"127.0.0.1/32\"]").await;
    // A client-written entry left of the trusted proxy's is not believed.
    let spoofed: &[_] = &[("x-forwarded-for", "203.0.113.7, 198.51.100.2")];
    assert_eq!(
        statuses(&edge, "/a.txt", &[one, two, one, spoofed]).await,
        [200, 200, 429, 429]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_the_limit() {
    let origin = origin();
    let edge = Edge::start(
        &origin,
        "",
        "[[edge.rate_limit.rules]]\nrate = 1\nper = \"1m\"\nburst = 1\n",
    );
    assert_eq!(statuses(&edge, "/a.txt", &[NONE; 2]).await, [200, 429]);
    reload_replacing(&edge, "burst = 1", "burst = 4").await;
    // The bucket keeps its one spent token: three more fit in a burst of four.
    assert_eq!(
        statuses(&edge, "/a.txt", &[NONE; 4]).await,
        [200, 200, 200, 429]
    );
    // Without the rule nothing is limited.
    reload_replacing(
        &edge,
        "[[edge.rate_limit.rules]]\nrate = 1\nper = \"1m\"\nburst = 4\n",
        "",
    )
    .await;
    assert_eq!(statuses(&edge, "/a.txt", &[NONE; 5]).await, [200; 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_clients_keep_being_served_during_a_flood() {
    let origin = origin();
    let edge = Edge::start(
        &origin,
        "",
        "[[edge.rate_limit.rules]]\nrate = 20\nburst = 20\nkey = \"header\"\nheader = \"x-client\"\n",
    );
    let url = format!("{}/a.txt", edge.daemon.url("http"));
    let flood = {
        let url = url.clone();
        tokio::spawn(async move {
            let client = crate::support::client();
            let mut limited = 0;
            for _ in 0..20 {
                let batch: Vec<_> = (0..20)
                    .map(|_| client.get(&url).header("x-client", "flood").send())
                    .collect();
                for response in futures_util::future::join_all(batch).await {
                    if response.unwrap().status() == 429 {
                        limited += 1;
                    }
                }
            }
            limited
        })
    };
    let client = crate::support::client();
    for n in 0..10 {
        let response = client
            .get(&url)
            .header("x-client", format!("calm-{}", n % 2))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {n} of a calm client");
    }
    let limited = flood.await.unwrap();
    assert!(limited > 0, "the flood was never limited");
}

/// The access log's file for the edge in `edge`.
fn log_file(edge: &Edge) -> PathBuf {
    edge.dir.path().join("data/nodes/edge/access.log")
}

fn lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_for_lines(path: &PathBuf, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} lines in {}", path.display()),
        Duration::from_secs(10),
        || async {
            let lines = lines(path);
            (lines.len() >= count).then_some(lines)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_in_json_and_combined() {
    let origin = origin();
    let mut edge = Edge::start(
        &origin,
        "",
        "[edge]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[edge.access_log]\npath = \"access.log\"\n",
    );
    let miss = get(
        &edge.daemon,
        "/a.txt?x=1",
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    let hit = get(&edge.daemon, "/a.txt?x=1", &[]).await;
    assert_eq!(
        (miss.how().as_str(), hit.how().as_str()),
        ("MISS origin", "HIT l1")
    );
    let path = log_file(&edge);
    let lines = wait_for_lines(&path, 2).await;
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (first, second) = (&parsed[0], &parsed[1]);
    assert_eq!(first["request_id"], miss.header("x-request-id"));
    assert_eq!(first["client"], "198.51.100.7");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/a.txt?x=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 4);
    assert_eq!(first["cache"], "MISS");
    assert_eq!(first["tier"], "origin");
    assert_eq!(first["upstream"], origin.daemon.addr("http").to_string());
    assert!(first["total_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert_eq!(first["simulated_ms"], 0.0);
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(second["request_id"], hit.header("x-request-id"));
    assert_eq!(second["client"], "127.0.0.1");
    assert_eq!(
        (&second["cache"], &second["tier"]),
        (&"HIT".into(), &"l1".into())
    );

    reload_replacing(
        &edge,
        "path = \"access.log\"",
        "path = \"access.log\"\nformat = \"combined\"",
    )
    .await;
    let got = get(
        &edge.daemon,
        "/b.txt",
        &[
            ("referer", "http://ref.test/"),
            ("user-agent", "tester/1.0"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let lines = wait_for_lines(&path, 3).await;
    let line = &lines[2];
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with("+0000] \"GET /b.txt HTTP/1.1\" 200 4 \"http://ref.test/\" \"tester/1.0\""),
        "{line}"
    );
    let state = crate::edge::stats(&edge.daemon).await.access_log.unwrap();
    assert_eq!(
        (state.format.as_str(), state.written, state.ok),
        ("combined", 3, true)
    );
    let text = admin(&edge, "/metrics").await;
    assert!(
        text.contains("edgebox_edge_access_log_lines_total{node=\"edge\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("edgebox_edge_access_log_dropped_total{node=\"edge\"} 0"),
        "{text}"
    );

    // A stopping edge writes its last request's line before it exits.
    assert_eq!(get(&edge.daemon, "/a.txt", &[]).await.status, 200);
    let status = edge.daemon.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert_eq!(self::lines(&path).len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reopens_the_log_and_an_unwritable_one_is_reported_in_healthz() {
    let origin = origin();
    let edge = Edge::start(&origin, "", "[edge.access_log]\npath = \"access.log\"\n");
    let path = log_file(&edge);
    assert_eq!(get(&edge.daemon, "/a.txt", &[]).await.status, 200);
    wait_for_lines(&path, 1).await;

    // Rotation: the file is renamed, the edge told to reopen.
    let rotated = path.with_file_name("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    signal(edge.daemon.pid(), 1);
    eventually(
        "a line in the reopened file",
        Duration::from_secs(10),
        || async {
            assert_eq!(get(&edge.daemon, "/a.txt", &[]).await.status, 200);
            (!lines(&path).is_empty()).then_some(())
        },
    )
    .await;
    assert!(!lines(&rotated).is_empty());

    // The file becomes unwritable (a directory in its place): requests keep succeeding,
    // and /healthz says why lines are lost.
    std::fs::rename(&path, path.with_file_name("access.log.2")).unwrap();
    std::fs::create_dir(&path).unwrap();
    signal(edge.daemon.pid(), 1);
    let health = eventually(
        "healthz reporting the log",
        Duration::from_secs(10),
        || async {
            assert_eq!(get(&edge.daemon, "/a.txt", &[]).await.status, 200);
            let health = healthz(&edge).await;
            (health["access_log"]["ok"] == false && health["access_log"]["write_errors"] != 0)
                .then_some(health)
        },
    )
    .await;
    assert_eq!(health["status"], "ok");
    assert!(
        health["access_log"]["error"]
            .as_str()
            .unwrap()
            .contains("access.log"),
        "{health}"
    );
    let text = admin(&edge, "/metrics").await;
    assert!(
        text.contains("edgebox_edge_access_log_ok{node=\"edge\"} 0"),
        "{text}"
    );

    // Writable again: the next reopen recovers.
    std::fs::remove_dir(&path).unwrap();
    signal(edge.daemon.pid(), 1);
    eventually("the log recovering", Duration::from_secs(10), || async {
        assert_eq!(get(&edge.daemon, "/a.txt", &[]).await.status, 200);
        let health = healthz(&edge).await;
        (health["access_log"]["ok"] == true && !lines(&path).is_empty()).then_some(())
    })
    .await;
}

#[test]
fn check_config_rejects_bad_rate_limits_and_logs_with_their_keys() {
    let dir = TestDir::new();
    let text = format!(
        "{}\n[[nodes]]\nname = \"edge\"\nrole = \"edge\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n\
         admin = \"127.0.0.1:0\"\norigin_group = \"g\"\n\n{}\n\
         [edge]\ntrusted_proxies = [\"10.1.2.3/8\"]\n\n\
         [[edge.rate_limit.rules]]\nrate = 0\nburst = 0\n\n\
         [[edge.rate_limit.rules]]\npattern = \"api\"\nrate = 5\nkey = \"cookie\"\n\n\
         [[edge.rate_limit.rules]]\nrate = 5\nkey = \"header\"\nheader = \"x api key\"\n\n\
         [edge.access_log]\nformat = \"xml\"\npath = \"/proc/edgebox-test/access.log\"\n",
        crate::support::ONE_REGION,
        crate::cache::origin_group_at("127.0.0.1:9".parse().unwrap()),
    );
    let config = dir.config(&text);
    let output = edgebox(&["check-config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let written = std::fs::read_to_string(&config).unwrap();
    let line_of = |needle: &str| {
        written
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("test bug: {needle:?}"))
            + 1
    };
    let file = config.display();
    for (key, line, message) in [
        (
            "edge.trusted_proxies[0]",
            line_of("10.1.2.3/8"),
            "network address",
        ),
        (
            "edge.rate_limit.rules[0].rate",
            line_of("rate = 0"),
            "at least 1",
        ),
        (
            "edge.rate_limit.rules[0].burst",
            line_of("burst = 0"),
            "at least 1",
        ),
        (
            "edge.rate_limit.rules[1].pattern",
            line_of("pattern = \"api\""),
            "must start with '/'",
        ),
        (
            "edge.rate_limit.rules[1].key",
            line_of("key = \"cookie\""),
            "unknown key",
        ),
        (
            "edge.rate_limit.rules[2].header",
            line_of("x api key"),
            "not an HTTP header name",
        ),
        (
            "edge.access_log.format",
            line_of("format = \"xml\""),
            "unknown format",
        ),
        (
            "edge.access_log.path",
            line_of("/proc/edgebox-test"),
            "not writable",
        ),
    ] {
        let expected = format!("{file}:{line}:");
        assert!(
            stderr.lines().any(|l| l.contains(&expected)
                && l.contains(&format!(": {key}: "))
                && l.contains(message)),
            "expected {expected}…{key}: …{message}… in:\n{stderr}"
        );
    }
}
