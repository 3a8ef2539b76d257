//! edgebox edge: pingora proxy with tiered cache, TLS and latency simulation.

pub mod cache;
