//! edgebox control plane: config lifecycle, nodes, purge, stats, sandbox relay — and
//! `simulate`, the CDN workload simulator that drives a deployment and reports on it.

pub mod simulate;
