//! edgebox's integration tests: one binary that starts the real daemons on port 0 and
//! talks to them over real HTTP, TLS and WebSockets.

mod support;

mod architecture;
mod cache;
mod config;
mod control_plane;
mod deploy;
mod edge;
mod multihost;
mod origin;
mod sandbox;
mod simulate;
mod up;
