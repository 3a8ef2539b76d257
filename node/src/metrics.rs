//! The one Prometheus text-format writer of the workspace (exposition format 0.0.4).
//!
//! Each metric family gets its `# HELP` and `# TYPE` lines once, however many samples
//! follow; label values are escaped (`\\`, `"`, newline), so a node or route name can
//! never break the format. Node daemons label their samples with `node`.

use std::fmt::Write;

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
    /// The family whose header was written last, so consecutive samples share it.
    current: Option<String>,
    /// Families already written, so that a family never gets two headers.
    seen: std::collections::BTreeSet<String>,
}

/// A value Prometheus can print.
pub trait Sample {
    fn write_to(&self, out: &mut String);
}

macro_rules! integer_sample {
    ($($ty:ty),*) => {$(
        impl Sample for $ty {
            fn write_to(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_sample!(u8, u16, u32, u64, usize, i32, i64, isize);

impl Sample for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

impl Sample for bool {
    fn write_to(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
}

impl MetricsText {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one sample of family `name`, with the family's header first if this is
    /// its first sample.
    pub fn sample(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        labels: &[(&str, &str)],
        value: impl Sample,
    ) -> &mut Self {
        if self.current.as_deref() != Some(name) {
            if self.seen.insert(name.to_owned()) {
                let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
                let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
            }
            self.current = Some(name.to_owned());
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(value, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
        self
    }

    /// Shorthand for a counter sample.
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl Sample,
    ) -> &mut Self {
        self.sample(name, Kind::Counter, help, labels, value)
    }

    /// Shorthand for a gauge sample.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl Sample,
    ) -> &mut Self {
        self.sample(name, Kind::Gauge, help, labels, value)
    }

    /// Appends another page's text (e.g. a sub-component's metrics).
    pub fn extend(&mut self, other: MetricsText) -> &mut Self {
        self.out.push_str(&other.out);
        self.seen.extend(other.seen);
        self.current = None;
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The content type of a metrics page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_header_per_family_and_escaped_label_values() {
        let mut text = MetricsText::new();
        text.counter("x_total", "Xs.", &[("node", "a\"b\\c\nd")], 3u64)
            .counter("x_total", "Xs.", &[("node", "e")], 4u64)
            .gauge("y", "Y.", &[], 0.5f64);
        let page = text.finish();
        assert_eq!(
            page,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{node=\"a\\\"b\\\\c\\nd\"} 3\nx_total{node=\"e\"} 4\n# HELP y Y.\n# TYPE y gauge\ny 0.5\n"
        );
    }
}
