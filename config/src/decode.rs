//! Decoding TOML sections one by one into serde types, reporting each failure at its
//! key path and place instead of stopping at the first. Shared by the deployment file
//! and other edgebox TOML files (simulation scenarios).

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::DeValue;

use crate::diagnostics::{Collector, join};

/// Decodes one value as `T`; a failure is reported at its full key path and `None` returned.
pub fn decode<T: DeserializeOwned>(
    c: &mut Collector<'_>,
    path: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<T> {
    let deserializer = value.clone().into_deserializer();
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            let inner = error.path().to_string();
            let full = match inner.as_str() {
                "" | "." => path.to_owned(),
                _ if inner.starts_with('[') => format!("{path}{inner}"),
                _ => format!("{path}.{inner}"),
            };
            let span = error.inner().span().or_else(|| Some(value.span()));
            c.error_at(full, span, error.inner().message().to_owned());
            None
        }
    }
}

/// Decodes each entry of a table of tables on its own, so one bad entry hides no other.
pub fn decode_map<T: DeserializeOwned>(
    c: &mut Collector<'_>,
    path: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Vec<(String, T)>> {
    let DeValue::Table(table) = value.get_ref() else {
        c.error_at(
            path,
            Some(value.span()),
            format!("`{path}` must be a table of named entries"),
        );
        return None;
    };
    let mut entries = Vec::new();
    for (key, entry) in table {
        let name = key.get_ref().to_string();
        if let Some(decoded) = decode(c, &join(path, &name), entry) {
            entries.push((name, decoded));
        }
    }
    Some(entries)
}

/// Decodes each element of an array of tables on its own; failed elements stay `None`
/// so that indexes in later messages match the file.
pub fn decode_list<T: DeserializeOwned>(
    c: &mut Collector<'_>,
    path: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Vec<Option<T>>> {
    let DeValue::Array(items) = value.get_ref() else {
        c.error_at(
            path,
            Some(value.span()),
            format!("`{path}` must be an array of tables ([[{path}]])"),
        );
        return None;
    };
    Some(
        items
            .iter()
            .enumerate()
            .map(|(index, item)| decode(c, &format!("{path}[{index}]"), item))
            .collect(),
    )
}
