//! Hosts for tests of what crosses a network: one Linux network namespace per host,
//! joined by veth pairs to a bridge, each with an address of a /24 of its own and a
//! hosts file naming every host (`ip netns exec` mounts `/etc/netns/NS/hosts` over
//! `/etc/hosts` for what it runs, so the daemons resolve the names through the system
//! resolver, as on real machines). The test process reaches every host through the
//! bridge's own address. Everything is removed when the [`Network`] is dropped, also
//! when the test panics.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The hosts of one test run. Names (namespaces, links, `/etc/netns` entries) carry an
/// id of this run, so concurrent runs never meet.
pub struct Network {
    id: String,
    bridge: String,
    subnet: u8,
    hosts: Vec<Host>,
}

struct Host {
    name: String,
    namespace: String,
    ip: Ipv4Addr,
}

impl Network {
    /// Creates one namespace per name in `hosts`, or says why this machine cannot
    /// (not root, no `ip`, no namespaces), for the test to print and skip.
    pub fn create(hosts: &[&str]) -> Result<Self, String> {
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("no `ip` command (iproute2)".to_owned());
        }
        let id = run_id();
        let subnet = free_subnet()?;
        let mut network = Self {
            bridge: format!("{id}br"),
            id,
            subnet,
            hosts: Vec::new(),
        };
        // A first namespace proves we may create them; anything failing after that
        // is a real failure.
        let probe = format!("{}-{}", network.id, hosts[0]);
        if let Err(error) = ip(&["netns", "add", &probe]) {
            return Err(format!("cannot create a network namespace ({error})"));
        }
        network.hosts.push(Host {
            name: hosts[0].to_owned(),
            namespace: probe,
            ip: network.address(2),
        });
        for (index, name) in hosts.iter().enumerate().skip(1) {
            let namespace = format!("{}-{name}", network.id);
            ip(&["netns", "add", &namespace]).expect("ip netns add");
            network.hosts.push(Host {
                name: (*name).to_owned(),
                namespace,
                ip: network.address(index as u8 + 2),
            });
        }
        let bridge = network.bridge.clone();
        ip(&["link", "add", &bridge, "type", "bridge"]).expect("bridge");
        ip(&["link", "set", &bridge, "up"]).expect("bridge up");
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.address(1)),
            "dev",
            &bridge,
        ])
        .expect("bridge address");
        let hosts_file = network.hosts_file();
        for (index, host) in network.hosts.iter().enumerate() {
            let (outside, inside) = (
                format!("{}h{index}", network.id),
                format!("{}n{index}", network.id),
            );
            let ns = host.namespace.as_str();
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])
            .expect("veth");
            ip(&["link", "set", &inside, "netns", ns]).expect("veth into namespace");
            ip(&["link", "set", &outside, "master", &bridge, "up"]).expect("veth on bridge");
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                &inside,
            ])
            .expect("host address");
            ip(&["-n", ns, "link", "set", &inside, "up"]).expect("veth up");
            ip(&["-n", ns, "link", "set", "lo", "up"]).expect("loopback up");
            let etc = etc_dir(ns);
            std::fs::create_dir_all(&etc).expect("/etc/netns/NS");
            std::fs::write(etc.join("hosts"), &hosts_file).expect("hosts file");
            // No DNS server in these hosts: a name missing from the hosts file fails at
            // once instead of waiting for a resolver that cannot be reached.
            std::fs::write(
                etc.join("resolv.conf"),
                "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            )
            .expect("resolv.conf");
        }
        Ok(network)
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, host)
    }

    /// `/etc/hosts` of every host: each name and its address.
    fn hosts_file(&self) -> String {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for host in &self.hosts {
            text.push_str(&format!("{} {}\n", host.ip, host.name));
        }
        text
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The address of host `name`.
    pub fn ip(&self, name: &str) -> Ipv4Addr {
        self.host(name).ip
    }

    /// `ip netns exec NS PROGRAM`: a command that runs `program` on host `name`.
    pub fn command(&self, name: &str, program: impl AsRef<Path>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(name).namespace])
            .arg(program.as_ref());
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.namespace]);
            let _ = std::fs::remove_dir_all(etc_dir(&host.namespace));
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

fn etc_dir(namespace: &str) -> PathBuf {
    Path::new("/etc/netns").join(namespace)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A short id for this run's names: interface names may have 15 bytes at most.
fn run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let mixed = std::process::id() ^ nanos.rotate_left(7) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("ebx{:05x}", mixed & 0xf_ffff)
}

/// A third octet of 10.77.X.0/24 that no route of this machine uses yet.
fn free_subnet() -> Result<u8, String> {
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map_err(|error| format!("ip route: {error}"))?;
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let start = (std::process::id() % 250) as u8;
    (0..250u8)
        .map(|offset| ((start as u16 + offset as u16) % 250 + 1) as u8)
        .find(|octet| !routes.contains(&format!("10.77.{octet}.")))
        .ok_or_else(|| "no free 10.77.X.0/24 subnet".to_owned())
}
