//! The `Server-Timing` value every response carries, written into a stack buffer.
//!
//! `sim;dur=S;desc="simulated network", origin;dur=O, edge;dur=E, total;dur=T`, each in
//! milliseconds with one decimal. This used to be a `format!` of four floats on every
//! response; integer tenths of a millisecond give the same text without it.

use std::time::Duration;

use http::HeaderValue;

use crate::header_text::{Digits, StackText, decimal};

/// The header value for these durations (`edge` is what is left of `total`).
pub fn server_timing(simulated: Duration, origin: Duration, total: Duration) -> HeaderValue {
    let edge = total.saturating_sub(simulated + origin);
    let mut out = StackText::<192>::default();
    write(&mut out, [simulated, origin, edge, total])
        .expect("192 bytes hold the fixed text and four durations of up to 39 digits");
    HeaderValue::from_bytes(out.as_bytes()).expect("digits and ASCII punctuation only")
}

fn write(
    out: &mut StackText<192>,
    [simulated, origin, edge, total]: [Duration; 4],
) -> std::fmt::Result {
    out.push(b"sim;dur=")?;
    tenths(out, simulated)?;
    out.push(b";desc=\"simulated network\", origin;dur=")?;
    tenths(out, origin)?;
    out.push(b", edge;dur=")?;
    tenths(out, edge)?;
    out.push(b", total;dur=")?;
    tenths(out, total)
}

/// `d` in milliseconds rounded to a tenth, e.g. `12.3`.
fn tenths(out: &mut StackText<192>, d: Duration) -> std::fmt::Result {
    let tenths = (d.as_nanos() + 50_000) / 100_000;
    let (whole, tenth) = (tenths / 10, (tenths % 10) as u8);
    let mut digits: Digits = [0; 40];
    out.push(decimal(whole, &mut digits))?;
    out.push(&[b'.', b'0' + tenth])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text the previous `format!("{:.1}")` produced, for values away from a tie.
    fn reference(simulated: Duration, origin: Duration, total: Duration) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let edge = total.saturating_sub(simulated + origin);
        format!(
            "sim;dur={:.1};desc=\"simulated network\", origin;dur={:.1}, edge;dur={:.1}, total;dur={:.1}",
            ms(simulated),
            ms(origin),
            ms(edge),
            ms(total)
        )
    }

    #[test]
    fn matches_float_formatting() {
        let cases = [
            (0, 0, 0),
            (0, 0, 1_234),
            (4_200_000, 9_100_000, 15_300_000),
            (0, 123_456_789, 987_654_321),
            (1_000_000_000_000, 1, 2_000_000_000_000),
            (0, 0, 49_999),
            (0, 0, 50_001),
            (0, 0, 99_999_999),
        ];
        for (s, o, t) in cases {
            let (s, o, t) = (
                Duration::from_nanos(s),
                Duration::from_nanos(o),
                Duration::from_nanos(t),
            );
            assert_eq!(server_timing(s, o, t).to_str().unwrap(), reference(s, o, t));
        }
    }
}
