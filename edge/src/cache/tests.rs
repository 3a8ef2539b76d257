//! Unit tests for the cache tiers.
