//! edgebox's integration tests: one binary that starts the real daemons on port 0 and
//! talks to them over real HTTP, TLS and WebSockets.

mod support;

mod config;
mod cache;
mod edge;
mod control_plane;
mod origin;
mod sandbox;
mod simulate;
mod up;
