//! Property tests: the deployment parser reads files anyone may write. Whatever the
//! text, `parse` returns (never panics), and a file that is valid TOML but wrong is
//! refused with diagnostics that name the key at fault.

use std::path::Path;

use proptest::prelude::*;
use toml::{Table, Value};

use crate::{EMBEDDED_DEFAULT, join_key_path, parse};

/// One step of a key path.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path as diagnostics spell it: `nodes[2].parent`.
fn spell(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => out = join_key_path(&out, key),
            Step::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Every leaf (scalar, or array of scalars' element) of the embedded default.
fn leaves(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match value {
        Value::Table(table) => {
            for (key, value) in table {
                path.push(Step::Key(key.clone()));
                leaves(value, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(Step::Index(index));
                leaves(item, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn default_table() -> Table {
    EMBEDDED_DEFAULT
        .parse()
        .expect("the embedded default is TOML")
}

fn all_leaves() -> Vec<Vec<Step>> {
    let mut out = Vec::new();
    leaves(&Value::Table(default_table()), &mut Vec::new(), &mut out);
    out
}

fn slot<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |value, step| match (step, value) {
        (Step::Key(key), Value::Table(table)) => table.get_mut(key).expect("leaf key"),
        (Step::Index(index), Value::Array(items)) => &mut items[*index],
        _ => unreachable!("paths come from the same table"),
    })
}

/// The embedded default with the leaf at `path` replaced by `value`, as TOML text.
fn with(path: &[Step], value: Value) -> String {
    let mut root = Value::Table(default_table());
    *slot(&mut root, path) = value;
    toml::to_string(&root).expect("a TOML table serialises")
}

/// Values a hostile or careless author might write anywhere.
fn hostile() -> impl Strategy<Value = Value> {
    let strings = prop_oneof![
        Just("0s"),
        Just("-1s"),
        Just("99999999999999999999h"),
        Just("1.5.5ms"),
        Just("18446744073709551616B"),
        Just("0B"),
        Just("127.0.0.1:99999"),
        Just("[::1]:0"),
        Just("**/["),
        Just("../../etc/passwd"),
        Just(""),
    ]
    .prop_map(|text| Value::String(text.to_owned()));
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(-1), Just(0)].prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        "\\PC{0,24}".prop_map(Value::String),
        strings,
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|map| Value::Table(map.into_iter().collect())),
        ]
    })
}

fn check(text: &str) -> Result<(), crate::ConfigErrors> {
    parse(text, "<property>", Path::new("/nonexistent/edgebox")).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_answered_without_a_panic(text in "\\PC{0,400}") {
        let _ = check(&text);
    }

    #[test]
    fn a_damaged_default_is_answered_without_a_panic(
        cut in 0..EMBEDDED_DEFAULT.len(),
        flips in proptest::collection::vec((0..EMBEDDED_DEFAULT.len(), any::<u8>()), 0..4),
    ) {
        let mut bytes = EMBEDDED_DEFAULT.as_bytes()[..cut].to_vec();
        for (at, byte) in flips {
            if at < bytes.len() {
                bytes[at] = byte;
            }
        }
        let _ = check(&String::from_utf8_lossy(&bytes));
    }

    /// A hostile value at any key: no panic, and if refused, every diagnostic names
    /// a key (the text is valid TOML, so no problem is a bare syntax error).
    #[test]
    fn a_hostile_value_anywhere_is_refused_by_key(
        leaf in proptest::sample::select(all_leaves()),
        value in hostile(),
    ) {
        if let Err(errors) = check(&with(&leaf, value)) {
            prop_assert!(!errors.diagnostics.is_empty());
            for diagnostic in &errors.diagnostics {
                prop_assert!(!diagnostic.path.is_empty(), "{}", errors);
            }
        }
    }

    /// A table where a scalar belongs is always wrong, and the diagnostics name
    /// that key (or a key inside it).
    #[test]
    fn a_wrong_type_is_reported_at_its_key(leaf in proptest::sample::select(all_leaves())) {
        let mut table = Table::new();
        table.insert("zz_not_a_key".to_owned(), Value::Integer(1));
        let spelled = spell(&leaf);
        let errors = check(&with(&leaf, Value::Table(table)))
            .expect_err("a table in place of a scalar is refused");
        prop_assert!(
            errors.diagnostics.iter().any(|d| !d.path.is_empty()
                && d.path.starts_with(&spelled)),
            "{} not named in {}", spelled, errors
        );
    }
}
