//! Where the edge sends a request: the origin group (or the parent edge), its members
//! resolved to addresses, per-origin live statistics and health, and the load-balancing
//! policy that picks one.
//!
//! An [`Upstream`] is part of the reloadable snapshot; the per-address [`OriginStats`]
//! live in an [`OriginRegistry`] that outlives reloads, so health and latency history
//! survive a policy change.

pub mod selection;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use edgebox_config::{Deployment, HashKey, HealthCheck, LbPolicy, OriginTarget, Role};
use parking_lot::Mutex;
use pingora::lb::Backend;
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, RoundRobin};

use selection::{LatencyAware, LeastConnections};

/// Weight of a new latency sample in the EWMA.
const EWMA_ALPHA: f64 = 0.3;
/// An EWMA not refreshed for this long counts half as much, so that an origin that was
/// slow once gets probed again instead of being shunned forever.
const EWMA_HALF_LIFE: Duration = Duration::from_secs(10);

/// Live numbers and health of one origin address.
#[derive(Debug)]
pub struct OriginStats {
    pub addr: SocketAddr,
    /// Region the address lives in, for the latency simulation.
    pub region: String,
    active: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// EWMA of response-header latency in microseconds, as f64 bits; 0 = no sample yet.
    ewma_bits: AtomicU64,
    health: Mutex<Health>,
    /// What the request path reads of `health` without taking its lock (every pick asks
    /// whether an origin is usable, every response resets the passive streak): written
    /// under the lock whenever `health` changes.
    usable_now: AtomicBool,
    /// `ejected_until` in milliseconds since `epoch`; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Whether `passive_streak` is non-zero, so a success need not lock to reset it.
    passive_streak_set: AtomicBool,
    epoch: Instant,
    last_sample_ms: AtomicU64,
}

#[derive(Debug)]
struct Health {
    /// Verdict of the active checks.
    healthy: bool,
    ok_streak: u32,
    fail_streak: u32,
    /// Passive ejection: not used until this instant.
    ejected_until: Option<Instant>,
    passive_streak: u32,
}

impl OriginStats {
    fn new(addr: SocketAddr, region: String) -> Self {
        Self {
            addr,
            region,
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma_bits: AtomicU64::new(0),
            health: Mutex::new(Health {
                healthy: true,
                ok_streak: 0,
                fail_streak: 0,
                ejected_until: None,
                passive_streak: 0,
            }),
            usable_now: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            passive_streak_set: AtomicBool::new(false),
            epoch: Instant::now(),
            last_sample_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Mirrors `health` into the lock-free fields; call with the lock held.
    fn publish(&self, health: &Health) {
        self.usable_now.store(health.healthy, Ordering::Release);
        let until = health.ejected_until.map_or(0, |until| {
            // Rounded up, so the origin is never back early.
            until.saturating_duration_since(self.epoch).as_millis() as u64 + 1
        });
        self.ejected_until_ms.store(until, Ordering::Release);
        self.passive_streak_set
            .store(health.passive_streak > 0, Ordering::Release);
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The EWMA in milliseconds, `None` before the first sample.
    pub fn ewma_ms(&self) -> Option<f64> {
        let value = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        (value > 0.0).then_some(value / 1000.0)
    }

    /// Expected cost of sending one more request here: decayed EWMA × (in flight + 1).
    pub fn latency_cost(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let age_ms = (self.epoch.elapsed().as_millis() as u64)
            .saturating_sub(self.last_sample_ms.load(Ordering::Relaxed));
        let decay = 0.5f64.powf(age_ms as f64 / EWMA_HALF_LIFE.as_millis() as f64);
        ewma * decay * (self.active() + 1) as f64
    }

    /// Starts one request; the guard ends it. Takes the `Arc` the pick returned, so a
    /// request moves one reference instead of cloning another (the count is shared by
    /// every worker thread).
    pub fn begin(self: Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }

    pub fn observe_latency(&self, latency: Duration) {
        let sample = latency.as_secs_f64() * 1_000_000.0;
        let old = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let new = if old > 0.0 {
            EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * old
        } else {
            sample.max(1.0)
        };
        self.ewma_bits.store(new.to_bits(), Ordering::Relaxed);
        self.last_sample_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Usable = the active checks say healthy and no passive ejection is running.
    pub fn usable(&self) -> bool {
        self.usable_now.load(Ordering::Acquire) && {
            let until = self.ejected_until_ms.load(Ordering::Acquire);
            until == 0 || self.now_ms() >= until
        }
    }

    pub fn healthy(&self) -> bool {
        self.usable()
    }

    /// Passive: a connect error or timeout ejects the origin at once for `eject_for`.
    pub fn passive_failure(&self, eject_for: Duration, threshold: u32, hard: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health.lock();
        health.passive_streak += 1;
        if hard || health.passive_streak >= threshold {
            if health
                .ejected_until
                .is_none_or(|until| Instant::now() >= until)
            {
                tracing::warn!(origin = %self.addr, for_ms = eject_for.as_millis() as u64, "origin ejected");
            }
            health.ejected_until = Some(Instant::now() + eject_for);
            health.passive_streak = 0;
        }
        self.publish(&health);
    }

    pub fn passive_success(&self) {
        if self.passive_streak_set.load(Ordering::Acquire) {
            let mut health = self.health.lock();
            health.passive_streak = 0;
            self.publish(&health);
        }
    }

    /// One active check result, applied with the thresholds.
    pub fn active_result(&self, ok: bool, check: &HealthCheck) {
        let mut health = self.health.lock();
        if ok {
            health.ok_streak += 1;
            health.fail_streak = 0;
            if !health.healthy && health.ok_streak >= check.healthy_threshold {
                health.healthy = true;
                // A recovered origin starts with a clean slate.
                health.ejected_until = None;
                tracing::info!(origin = %self.addr, "origin healthy again");
            }
        } else {
            health.fail_streak += 1;
            health.ok_streak = 0;
            if health.healthy && health.fail_streak >= check.unhealthy_threshold {
                health.healthy = false;
                tracing::warn!(origin = %self.addr, "origin failed active health checks");
            }
        }
        self.publish(&health);
    }
}

/// Marks the end of a request on an origin.
#[derive(Debug)]
pub struct ActiveGuard(Arc<OriginStats>);

impl ActiveGuard {
    pub fn stats(&self) -> &Arc<OriginStats> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every origin address the edge has used, kept across reloads.
#[derive(Debug, Default)]
pub struct OriginRegistry {
    by_addr: Mutex<HashMap<SocketAddr, Arc<OriginStats>>>,
}

impl OriginRegistry {
    pub fn get(&self, addr: SocketAddr, region: &str) -> Arc<OriginStats> {
        self.by_addr
            .lock()
            .entry(addr)
            .or_insert_with(|| Arc::new(OriginStats::new(addr, region.to_owned())))
            .clone()
    }
}

/// One configured member before resolution.
#[derive(Debug, Clone)]
pub struct Member {
    pub target: OriginTarget,
    pub weight: u32,
    /// Region of the member (origin node's region; the edge's own for hosts).
    pub region: String,
}

/// What a request is sent to, as chosen by config.
#[derive(Debug)]
pub struct Upstream {
    /// `group NAME` or `parent NAME`, for logs and error messages.
    pub label: String,
    pub policy: LbPolicy,
    pub members: Vec<Member>,
    pub health: HealthCheck,
    /// Active checks run only against origins, not against a parent edge.
    pub active_checks: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: u32,
    pool: ArcSwap<Pool>,
}

/// The resolved backends and the policy's selection structure over them.
pub struct Pool {
    pub origins: Vec<Arc<OriginStats>>,
    selector: Selector,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origins", &self.origins)
            .finish()
    }
}

enum Selector {
    RoundRobin(Arc<RoundRobin>),
    Consistent(Arc<Consistent>),
    LeastConnections(Arc<LeastConnections>),
    LatencyAware(Arc<LatencyAware>),
}

impl Pool {
    fn build(policy: &LbPolicy, origins: Vec<(Arc<OriginStats>, u32)>) -> Self {
        let backends: BTreeSet<Backend> = origins
            .iter()
            .map(|(stats, weight)| {
                let mut backend = Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(stats.addr),
                    // Only the weighted policies look at weights.
                    weight: match policy {
                        LbPolicy::Weighted
                        | LbPolicy::ConsistentHash { .. }
                        | LbPolicy::LeastConnections => (*weight).max(1) as usize,
                        _ => 1,
                    },
                    ext: http::Extensions::new(),
                };
                backend.ext.insert(stats.clone());
                backend
            })
            .collect();
        let selector = match policy {
            LbPolicy::RoundRobin | LbPolicy::Weighted => {
                Selector::RoundRobin(Arc::new(RoundRobin::build(&backends)))
            }
            LbPolicy::ConsistentHash { .. } => {
                Selector::Consistent(Arc::new(Consistent::build(&backends)))
            }
            LbPolicy::LeastConnections => {
                Selector::LeastConnections(Arc::new(LeastConnections::build(&backends)))
            }
            LbPolicy::LatencyAware => {
                Selector::LatencyAware(Arc::new(LatencyAware::build(&backends)))
            }
        };
        Self {
            origins: origins.into_iter().map(|(stats, _)| stats).collect(),
            selector,
        }
    }

    fn pick(&self, key: &[u8], skip: &[SocketAddr]) -> Option<Arc<OriginStats>> {
        let acceptable = |stats: &Arc<OriginStats>| stats.usable() && !skip.contains(&stats.addr);
        // Walk the policy's preference order a bounded number of steps.
        let limit = self.origins.len() * 4 + 4;
        let found = match &self.selector {
            Selector::RoundRobin(s) => first_acceptable(s.iter(key), limit, acceptable),
            Selector::Consistent(s) => first_acceptable(s.iter(key), limit, acceptable),
            Selector::LeastConnections(s) => first_acceptable(s.iter(key), limit, acceptable),
            Selector::LatencyAware(s) => first_acceptable(s.iter(key), limit, acceptable),
        };
        // Hash-based fallbacks may not visit every backend; finish with a plain scan.
        found.or_else(|| self.origins.iter().find(|s| acceptable(s)).cloned())
    }
}

fn first_acceptable(
    mut iter: impl BackendIter,
    limit: usize,
    acceptable: impl Fn(&Arc<OriginStats>) -> bool,
) -> Option<Arc<OriginStats>> {
    for _ in 0..limit {
        let backend = iter.next()?;
        if let Some(stats) = backend.ext.get::<Arc<OriginStats>>()
            && acceptable(stats)
        {
            return Some(stats.clone());
        }
    }
    None
}

impl Upstream {
    /// The upstream of edge `node`: its parent edge if it has one, else its origin group.
    /// Host members start with their literal addresses (if any); discovery fills in the
    /// rest before traffic arrives.
    pub fn build(deployment: &Deployment, node: &str, registry: &OriginRegistry) -> Self {
        let me = deployment.node(node).expect("node checked by caller");
        let Role::Edge(edge) = &me.role else {
            unreachable!("role checked by caller")
        };
        let group = &deployment.origin_groups[&edge.origin_group];
        if let Some(parent) = &edge.parent {
            let parent_node = deployment.node(parent).expect("validated parent");
            let addr = match &parent_node.role {
                Role::Edge(p) => p.http.unwrap_or(p.admin),
                _ => unreachable!("validated parent is an edge"),
            };
            let members = vec![Member {
                target: OriginTarget::Node {
                    name: parent.clone(),
                    addr,
                },
                weight: 1,
                region: parent_node.region.clone(),
            }];
            let upstream = Self {
                label: format!("parent {parent}"),
                policy: LbPolicy::RoundRobin,
                members,
                health: group.health.clone(),
                active_checks: false,
                connect_timeout: group.connect_timeout,
                read_timeout: group.read_timeout,
                retries: group.retries,
                pool: ArcSwap::from_pointee(Pool::build(&LbPolicy::RoundRobin, Vec::new())),
            };
            upstream.set_addresses(registry, &HashMap::new());
            return upstream;
        }
        let members = group
            .members
            .iter()
            .map(|member| Member {
                region: match &member.target {
                    OriginTarget::Node { name, .. } => deployment
                        .node(name)
                        .map_or_else(|| me.region.clone(), |n| n.region.clone()),
                    OriginTarget::Host { .. } => me.region.clone(),
                },
                target: member.target.clone(),
                weight: member.weight,
            })
            .collect();
        let upstream = Self {
            label: format!("group {}", edge.origin_group),
            policy: group.policy.clone(),
            members,
            health: group.health.clone(),
            active_checks: true,
            connect_timeout: group.connect_timeout,
            read_timeout: group.read_timeout,
            retries: group.retries,
            pool: ArcSwap::from_pointee(Pool::build(&group.policy, Vec::new())),
        };
        upstream.set_addresses(registry, &HashMap::new());
        upstream
    }

    /// Members named by host (and not a literal IP) that need DNS.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        self.members
            .iter()
            .filter_map(|m| match &m.target {
                OriginTarget::Host { host, port } if host.parse::<std::net::IpAddr>().is_err() => {
                    Some((host.clone(), *port))
                }
                _ => None,
            })
            .collect()
    }

    /// Rebuilds the pool from the members, with `resolved` giving the addresses of
    /// host members (`host` -> addresses). Returns whether the address set changed.
    pub fn set_addresses(
        &self,
        registry: &OriginRegistry,
        resolved: &HashMap<String, Vec<std::net::IpAddr>>,
    ) -> bool {
        let mut origins: Vec<(Arc<OriginStats>, u32)> = Vec::new();
        for member in &self.members {
            let addrs: Vec<SocketAddr> = match &member.target {
                OriginTarget::Node { addr, .. } => vec![*addr],
                OriginTarget::Host { host, port } => match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, *port)],
                    Err(_) => resolved
                        .get(host)
                        .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, *port)).collect())
                        .unwrap_or_default(),
                },
            };
            for addr in addrs {
                if !origins.iter().any(|(s, _)| s.addr == addr) {
                    origins.push((registry.get(addr, &member.region), member.weight));
                }
            }
        }
        let old: BTreeSet<SocketAddr> = self.pool.load().origins.iter().map(|s| s.addr).collect();
        let new: BTreeSet<SocketAddr> = origins.iter().map(|(s, _)| s.addr).collect();
        let changed = old != new;
        if changed || self.pool.load().origins.is_empty() {
            self.pool
                .store(Arc::new(Pool::build(&self.policy, origins)));
        }
        changed
    }

    pub fn pool(&self) -> arc_swap::Guard<Arc<Pool>> {
        self.pool.load()
    }

    /// Picks an origin for a request, skipping the ones already tried.
    pub fn pick(&self, key: &[u8], skip: &[SocketAddr]) -> Option<Arc<OriginStats>> {
        self.pool.load().pick(key, skip)
    }

    /// The hash key header, when the policy hashes on one.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.policy {
            LbPolicy::ConsistentHash { key } => Some(key),
            _ => None,
        }
    }

    /// How long a passively ejected origin sits out.
    pub fn eject_for(&self) -> Duration {
        (self.health.interval * 2).clamp(Duration::from_millis(500), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests;
