//! The dashboard in headless Chromium, driven over the DevTools protocol: sign-in with the
//! token kept out of the URL, the request-path drawing, live charts that follow the
//! traffic, purge (a soft one turning the next response into a revalidation), and the code
//! runner with its live line highlight, streamed output and interactive stdin.
//!
//! Chromium is Debian's `chromium` package; the test installs it when missing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::OPERATOR;
use super::real::{CACHEABLE_HTML, Real};
use crate::support::{TestDir, eventually};

fn chromium_path() -> String {
    let found = || {
        ["chromium", "chromium-browser"].into_iter().find(|name| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {name}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
    };
    if let Some(name) = found() {
        return name.to_owned();
    }
    eprintln!("installing Debian's chromium for the dashboard test");
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("running apt-get");
    assert!(status.success(), "apt-get install chromium failed");
    found().expect("chromium after installing it").to_owned()
}

/// A headless Chromium, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools: String,
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium_path())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let devtools = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium's DevTools address");
        Self {
            child,
            _profile: profile,
            devtools,
        }
    }

    /// The WebSocket URL of the first page target.
    async fn page(&self) -> String {
        let http_base = self.devtools.replacen("ws://", "http://", 1);
        let host = http_base.split("/devtools").next().unwrap().to_owned();
        let client = crate::support::client();
        eventually("a page target", Duration::from_secs(20), || async {
            let targets: Value = client
                .get(format!("{host}/json/list"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            targets
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        })
        .await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page's DevTools session.
struct Page {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("DevTools answer")
                .expect("DevTools connection open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"] == id {
                assert!(value["error"].is_null(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// Evaluates a JS expression in the page and returns its JSON value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy; returns its value.
    async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.eval(expression).await;
            if !(value.is_null() || value == false || value == "" || value == 0) {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_topology_purges_and_runs_code_with_the_live_line() {
    let dir = TestDir::new();
    // No stale-while-revalidate: a soft-purged page is revalidated before it is served.
    let extra = format!("{CACHEABLE_HTML}\n[cache]\nstale_while_revalidate = \"0s\"\n");
    let real = Real::start(&dir, &["edge-a"], true, &extra).await;
    let cp = &real.cp;
    // Cache traffic so the stats have a hit ratio for L1.
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "HIT");
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let (socket, _) = tokio_tungstenite::connect_async(browser.page().await)
        .await
        .expect("DevTools page socket");
    let mut page = Page { socket, next_id: 0 };
    page.call("Page.enable", json!({})).await;
    page.call(
        "Page.navigate",
        json!({"url": format!("{}/", cp.daemon.url("api"))}),
    )
    .await;

    // Sign in through the form: the token stays in this tab's sessionStorage, out of the
    // URL and out of the page's own input.
    page.wait_for(
        "the page's script",
        "document.documentElement?.dataset.ready === 'true' && document.getElementById('login')?.hidden === false",
    )
    .await;
    page.eval(&format!(
        "document.getElementById('token').value = {}; \
        document.querySelector('#login button').click(); true",
        json!(OPERATOR)
    ))
    .await;
    let signed_in = page.eval("JSON.stringify({url: location.href, stored: sessionStorage.getItem('edgebox-token'), \
        input: document.getElementById('token').value, form_hidden: getComputedStyle(document.getElementById('login')).display === 'none'})").await;
    let signed_in: Value = serde_json::from_str(signed_in.as_str().unwrap()).unwrap();
    assert_eq!(signed_in["stored"], OPERATOR, "{signed_in}");
    assert_eq!(signed_in["input"], "", "{signed_in}");
    assert_eq!(signed_in["form_hidden"], true, "{signed_in}");
    assert!(
        !signed_in["url"].as_str().unwrap().contains(OPERATOR),
        "{signed_in}"
    );
    assert!(
        !signed_in["url"].as_str().unwrap().contains('?'),
        "{signed_in}"
    );

    // Topology: every node with its health and config version.
    let nodes = page.wait_for("the topology", "document.querySelectorAll('[data-node]').length === 4 && \
        [...document.querySelectorAll('[data-node]')].map(n => n.dataset.node + ' ' + n.className + ' ' + n.textContent).join('\\n')").await;
    let nodes = nodes.as_str().unwrap();
    for node in ["edge-a", "origin-1", "sandbox"] {
        assert!(nodes.contains(&format!("{node} node up")), "{nodes}");
    }
    assert!(
        nodes.contains("control node up") && nodes.contains("config v1 ✓"),
        "{nodes}"
    );
    page.wait_for(
        "stats",
        "document.getElementById('stats').textContent.includes('hit ratio l1') && \
         [...document.querySelectorAll('#stats .stat')].some(s => s.textContent === '0 run · 0 queuedsandbox')",
    )
    .await;

    // The request path: clients in `local` → edge-a → origin-1, each in its health.
    let path = page.wait_for("the request path", "document.querySelectorAll('[data-path-node]').length === 3 && \
        [...document.querySelectorAll('[data-path-node]')].map(n => n.dataset.pathNode + ' ' + n.getAttribute('class')).join('\\n') + '\\n' + \
        [...document.querySelectorAll('[data-link]')].map(l => l.dataset.link).join('\\n')").await;
    let path = path.as_str().unwrap();
    for line in [
        "clients:local hop clients",
        "edge-a hop up",
        "origin-1 hop up",
        "clients:local>edge-a",
        "edge-a>origin-1",
    ] {
        assert!(path.lines().any(|l| l == line), "{line:?} in\n{path}");
    }

    // Live charts: traffic sent now shows up within a poll or two as requests per second,
    // an L1 hit ratio and latency percentiles of that interval.
    let samples_before: u64 = page
        .wait_for(
            "the charts' first samples",
            "document.getElementById('chart-rps').dataset.samples",
        )
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let edge_url = real.edge("edge-a").url("http");
    let traffic = tokio::spawn(async move {
        let client = crate::support::client();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(response) = client.get(format!("{edge_url}/index.html")).send().await {
                let _ = response.bytes().await;
            }
        }
    });
    let charted = page.wait_for("the charts to show the traffic", "(() => { \
        const last = (id) => JSON.parse(document.getElementById(id).dataset.last || '{}'); \
        const rps = last('chart-rps'), hit = last('chart-hit'), latency = last('chart-latency'); \
        const lines = document.querySelectorAll('#chart-rps polyline').length; \
        return rps.rps > 5 && hit.l1 > 0.5 && latency.p50 != null && latency.p99 != null && lines > 0 \
            && JSON.stringify({rps, hit, latency, samples: document.getElementById('chart-rps').dataset.samples}); })()").await;
    traffic.abort();
    let charted: Value = serde_json::from_str(charted.as_str().unwrap()).unwrap();
    let samples: u64 = charted["samples"].as_str().unwrap().parse().unwrap();
    assert!(samples > samples_before, "{charted}");
    assert!(
        charted["latency"]["p99"].as_u64() >= charted["latency"]["p50"].as_u64(),
        "{charted}"
    );

    // A soft purge from the form: the next response is a revalidation, not a miss.
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "HIT");
    page.eval("document.getElementById('purge-kind').value = 'url'; document.getElementById('purge-value').value = '/index.html'; \
        document.getElementById('purge-soft').checked = true; \
        document.querySelector('#purge-form button').click(); true").await;
    page.wait_for(
        "soft purge results",
        "document.getElementById('purge-results').textContent.includes('1 marked stale')",
    )
    .await;
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "REVALIDATED");
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "HIT");

    // Purge through the form.
    page.eval("document.getElementById('purge-kind').value = 'tag'; document.getElementById('purge-value').value = 'html'; \
        document.getElementById('purge-soft').checked = false; \
        document.querySelector('#purge-form button').click(); true").await;
    page.wait_for(
        "purge results",
        "document.getElementById('purge-results').textContent.includes('1 purged')",
    )
    .await;
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");

    // Code runner: a real Python program with two busy loops. The highlighted line
    // moves from one loop to the other while it runs, and its output streams in. The
    // program waits for a line of stdin first, so that the page is watching before the
    // loops start however loaded the machine is.
    let send_line = |line: &str| {
        format!(
            "document.getElementById('stdin-line').value = {}; \
             document.getElementById('stdin-send').click(); true",
            json!(line)
        )
    };
    let source = "input()\nimport time\nfor i in range(3):\n    end = time.monotonic() + 0.3\n    while time.monotonic() < end: pass\n    print('tick', i, flush=True)\n    end = time.monotonic() + 0.3\n    while time.monotonic() < end: pass\n";
    page.eval(&format!("document.getElementById('editor').value = {}; document.getElementById('interactive').checked = true; \
        document.getElementById('run').click(); true", json!(source))).await;
    page.wait_for(
        "the program waiting in input(), the input box open",
        "!document.getElementById('stdin-send').disabled",
    )
    .await;
    page.eval(&send_line("go")).await;
    let mut seen_lines = std::collections::BTreeSet::new();
    let mut saw_running_time = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let state = page.eval("JSON.stringify({line: (document.querySelector('#code-view li.current') || {}).textContent || null, \
            index: [...document.querySelectorAll('#code-view li')].findIndex(li => li.classList.contains('current')), \
            status: document.getElementById('job-status').textContent, output: document.getElementById('output').textContent})").await;
        let state: Value = serde_json::from_str(state.as_str().unwrap()).unwrap();
        let status = state["status"].as_str().unwrap();
        if let Some(index) = state["index"].as_i64().filter(|i| *i >= 0) {
            let line = index as usize + 1;
            assert_eq!(
                state["line"].as_str().unwrap(),
                source.lines().nth(line - 1).unwrap(),
                "highlighted text is that line"
            );
            seen_lines.insert(line);
        }
        if status.starts_with("running") && status.contains(" s") {
            saw_running_time = true;
        }
        if status.starts_with("succeeded") {
            assert_eq!(state["output"], "go\ntick 0\ntick 1\ntick 2\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job did not finish in the page: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_running_time, "the running time was shown while running");
    assert!(
        seen_lines.contains(&5)
            && seen_lines.contains(&8)
            && seen_lines.iter().all(|l| (1..=8).contains(l)),
        "lines highlighted: {seen_lines:?}"
    );

    // Interactive stdin from the input box: the program waits in `input()` (that line
    // highlighted), each line sent resumes it, a malformed frame is answered with an
    // error shown in the output while the job goes on, and EOF ends its reading.
    let source = "name = input('name? ')\nprint('hello', name, flush=True)\nrest = input()\nprint('more', rest, flush=True)\ntry:\n    input()\nexcept EOFError:\n    print('eof')\n";
    page.eval(&format!("document.getElementById('editor').value = {}; document.getElementById('interactive').checked = true; \
        document.getElementById('run').click(); true", json!(source))).await;
    page.wait_for(
        "the program waiting in input() on line 1, the input box open",
        "!document.getElementById('stdin-send').disabled && \
         document.getElementById('output').textContent === 'name? ' && \
         [...document.querySelectorAll('#code-view li')].findIndex(li => li.classList.contains('current')) === 0",
    )
    .await;
    page.eval("job.socket.send('not json'); true").await;
    page.wait_for(
        "the refusal shown",
        "document.querySelector('#output .error')?.textContent.startsWith('invalid_message')",
    )
    .await;
    page.eval(&send_line("dashboard")).await;
    page.wait_for(
        "the first answer",
        "document.getElementById('output').textContent.includes('hello dashboard')",
    )
    .await;
    page.wait_for(
        "the second input() highlighted",
        "[...document.querySelectorAll('#code-view li')].findIndex(li => li.classList.contains('current')) === 2",
    )
    .await;
    page.eval(&send_line("second")).await;
    page.wait_for(
        "the second answer",
        "document.getElementById('output').textContent.includes('more second')",
    )
    .await;
    page.eval("document.getElementById('stdin-eof').click(); true")
        .await;
    let done = page
        .wait_for(
            "the job to end after EOF",
            "document.getElementById('job-status').textContent.startsWith('succeeded') && \
             JSON.stringify({output: [...document.querySelectorAll('#output span:not(.error)')].map(s => s.textContent).join(''), \
             closed: document.getElementById('stdin-send').disabled && document.getElementById('stdin-line').disabled})",
        )
        .await;
    let done: Value = serde_json::from_str(done.as_str().unwrap()).unwrap();
    assert_eq!(
        done["output"], "name? dashboard\nhello dashboard\nsecond\nmore second\neof\n",
        "{done}"
    );
    assert_eq!(done["closed"], true, "the input box closes with the job");
}
