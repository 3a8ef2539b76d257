//! The origin daemon over real HTTP.
