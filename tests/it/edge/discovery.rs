//! Origins named by host: resolved through DNS (a tiny test DNS server the edge is
//! pointed at with `EDGEBOX_DNS_SERVER`), every A record a backend, re-resolved when the
//! TTL runs out; and `/etc/hosts` names (`localhost`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use super::{SECOND, TestOrigin, get, stats};
use crate::support::{Daemon, ONE_REGION, TestDir, client, eventually};

/// Answers every A query with the current address list (TTL 1 s), AAAA with nothing.
struct TestDns {
    addr: SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
}

impl TestDns {
    fn start(initial: Vec<Ipv4Addr>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let answers = Arc::new(Mutex::new(initial));
        let shared = answers.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(reply) = answer(&buf[..n], &shared.lock().unwrap()) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self { addr, answers }
    }

    fn set(&self, addrs: Vec<Ipv4Addr>) {
        *self.answers.lock().unwrap() = addrs;
    }
}

fn answer(query: &[u8], addrs: &[Ipv4Addr]) -> Option<Vec<u8>> {
    // Header (12 bytes), then QNAME labels up to a zero byte, QTYPE, QCLASS.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + *query.get(end)? as usize;
    }
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let question = &query[12..end + 5];
    let records: &[Ipv4Addr] = if qtype == 1 { addrs } else { &[] };
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // id
    reply.extend_from_slice(&[0x81, 0x80]); // response, recursion desired + available
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for ip in records {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]); // name pointer, A, IN
        reply.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

fn config(host: &str, port: u16) -> String {
    format!(
        "{ONE_REGION}\n[[nodes]]\nname = \"edge\"\nrole = \"edge\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin_group = \"g\"\n\n[origin_groups.g]\npolicy = \"round_robin\"\nmembers = [{{ host = \"{host}\", port = {port} }}]\nhealth = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", healthy_threshold = 1, unhealthy_threshold = 2 }}\n"
    )
}

async fn origins_in_stats(edge: &Daemon) -> Vec<String> {
    let body = stats(edge).await;
    let mut list: Vec<String> = body.origins.into_iter().map(|o| o.address).collect();
    list.sort();
    list
}

#[tokio::test]
async fn host_members_follow_dns_changes_after_ttl_expiry() {
    let a = TestOrigin::start_on("a", "127.0.0.2:0".parse().unwrap());
    let port = a.addr.port();
    let b = TestOrigin::start_on("b", SocketAddr::from(([127, 0, 0, 3], port)));
    let dns = TestDns::start(vec![Ipv4Addr::new(127, 0, 0, 2)]);
    let dir = TestDir::new();
    let path = dir.config(&config("origins.edgebox.test", port));
    let dns_addr = dns.addr.to_string();
    let edge = Daemon::start_with(
        "edge",
        &path,
        "edge",
        &["http", "admin"],
        &[("EDGEBOX_DNS_SERVER", dns_addr.as_str())],
    );
    let client = client();
    let url = format!("{}/dns", edge.url("http"));
    for _ in 0..4 {
        assert_eq!(get(&client, &url).await.1, "a");
    }
    assert_eq!(origins_in_stats(&edge).await, vec![a.addr.to_string()]);

    // Two A records: both become backends once the 1 s TTL has run out.
    dns.set(vec![
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
    ]);
    eventually("both addresses in the pool", 10 * SECOND, || async {
        (origins_in_stats(&edge).await.len() == 2).then_some(())
    })
    .await;
    for _ in 0..6 {
        get(&client, &url).await;
    }
    assert!(
        b.requests() >= 2,
        "b serves too (a {}, b {})",
        a.requests(),
        b.requests()
    );

    // The old address disappears from DNS: traffic follows.
    dns.set(vec![Ipv4Addr::new(127, 0, 0, 3)]);
    eventually("only b in the pool", 10 * SECOND, || async {
        (origins_in_stats(&edge).await == vec![b.addr.to_string()]).then_some(())
    })
    .await;
    let before = a.requests();
    for _ in 0..5 {
        assert_eq!(get(&client, &url).await.1, "b");
    }
    assert_eq!(a.requests(), before);
}

#[tokio::test]
async fn hosts_file_names_resolve() {
    let origin = TestOrigin::start("o");
    let dir = TestDir::new();
    let path = dir.config(&config("localhost", origin.addr.port()));
    let edge = Daemon::start("edge", &path, "edge", &["http", "admin"]);
    // localhost may also map to ::1, where nothing listens: health checks take it out.
    eventually("served through localhost", 10 * SECOND, || async {
        let (status, origin, _) = get(&client(), &format!("{}/hosts", edge.url("http"))).await;
        (status == 200 && origin == "o").then_some(())
    })
    .await;
    assert!(
        origins_in_stats(&edge)
            .await
            .contains(&origin.addr.to_string())
    );
}
