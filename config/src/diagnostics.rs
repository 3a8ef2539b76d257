//! Config errors that name the file, line, column and key path of every problem.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Key path, e.g. `nodes[2].parent` (empty for syntax errors).
    pub path: String,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

/// Every problem found in one deployment file. Displayed one per line, compiler style.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize)]
pub struct ConfigErrors {
    /// The file as the user named it (or `<embedded default>`).
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_diagnostics(f, &self.file, "deployment config", &self.diagnostics)
    }
}

/// Writes `FILE: N errors in WHAT`, then one `FILE:LINE:COL: KEY: MESSAGE` line per
/// diagnostic, compiler style.
pub fn write_diagnostics(
    f: &mut fmt::Formatter<'_>,
    file: &str,
    what: &str,
    diagnostics: &[Diagnostic],
) -> fmt::Result {
    let count = diagnostics.len();
    writeln!(
        f,
        "{file}: {count} error{} in {what}",
        if count == 1 { "" } else { "s" }
    )?;
    for diagnostic in diagnostics {
        write!(f, "  {file}")?;
        if let (Some(line), Some(column)) = (diagnostic.line, diagnostic.column) {
            write!(f, ":{line}:{column}")?;
        }
        if diagnostic.path.is_empty() {
            writeln!(f, ": {}", diagnostic.message)?;
        } else {
            writeln!(f, ": {}: {}", diagnostic.path, diagnostic.message)?;
        }
    }
    Ok(())
}

/// Collects diagnostics while a file is checked, placing each by its key path.
///
/// Public so that other TOML files edgebox reads (simulation scenarios) report their
/// problems the same way.
pub struct Collector<'s> {
    source: &'s str,
    spans: HashMap<String, Range<usize>>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'s> Collector<'s> {
    pub fn new(source: &'s str, root: &DeTable<'_>) -> Self {
        let mut spans = HashMap::new();
        index_table(root, "", &mut spans);
        Self {
            source,
            spans,
            diagnostics: Vec::new(),
        }
    }

    pub fn without_index(source: &'s str) -> Self {
        Self {
            source,
            spans: HashMap::new(),
            diagnostics: Vec::new(),
        }
    }

    /// Reports a problem with the key at `path`, placed at that key (or its nearest
    /// parent that appears in the file, for keys that were left out).
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let span = self.span_of(&path);
        self.push(path, span, message.into());
    }

    /// Reports a problem at a known byte range.
    pub fn error_at(
        &mut self,
        path: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let path = path.into();
        let span = span.or_else(|| self.span_of(&path));
        self.push(path, span, message.into());
    }

    fn push(&mut self, path: String, span: Option<Range<usize>>, message: String) {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_column(self.source, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        self.diagnostics.push(Diagnostic {
            path,
            line,
            column,
            message,
        });
    }

    fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut candidate = path;
        loop {
            if let Some(span) = self.spans.get(candidate) {
                return Some(span.clone());
            }
            let cut = candidate.rfind(['.', '['])?;
            candidate = &candidate[..cut];
        }
    }
}

fn index_table(table: &DeTable<'_>, prefix: &str, spans: &mut HashMap<String, Range<usize>>) {
    for (key, value) in table {
        let path = join(prefix, key.get_ref());
        spans.insert(path.clone(), key.span());
        index_value(value, &path, spans);
    }
}

fn index_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    spans: &mut HashMap<String, Range<usize>>,
) {
    match value.get_ref() {
        DeValue::Table(table) => index_table(table, path, spans),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{index}]");
                spans.insert(item_path.clone(), item.span());
                index_value(item, &item_path, spans);
            }
        }
        _ => {}
    }
}

/// Joins a key onto a path, quoting keys that are not bare TOML keys.
pub fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
