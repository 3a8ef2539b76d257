//! Built-in scenarios (`edgebox simulate --example NAME`). Each starts the embedded
//! default deployment itself on free ports, so it needs nothing else running.

use std::path::PathBuf;

use super::scenario::{self, Scenario, ScenarioErrors};

/// `(name, scenario text)` of every built-in example.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("tiering", include_str!("examples/tiering.toml")),
    ("lb-policies", include_str!("examples/lb-policies.toml")),
    ("policies", include_str!("examples/policies.toml")),
    ("trace-live", include_str!("examples/trace-live.toml")),
];

/// The names of the built-in examples.
pub fn names() -> Vec<&'static str> {
    EXAMPLES.iter().map(|(name, _)| *name).collect()
}

/// The text of an example, if it exists.
pub fn text(name: &str) -> Option<&'static str> {
    EXAMPLES
        .iter()
        .find(|(example, _)| *example == name)
        .map(|(_, text)| *text)
}

/// Parses and checks a built-in example.
pub fn load(name: &str) -> Option<Result<Scenario, ScenarioErrors>> {
    let text = text(name)?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    Some(scenario::parse(
        text,
        &format!("<example {name}>"),
        &cwd,
        name,
    ))
}
