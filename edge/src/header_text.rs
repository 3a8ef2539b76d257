//! Header values the hot path writes without allocating for the text: numbers in decimal
//! and short values assembled in a stack buffer, and the values made once per process
//! (static bytes, whose clones touch no reference count that every worker thread shares).

use std::fmt;

use http::HeaderValue;
use http::header::InvalidHeaderValue;

/// Room for any `u128` in decimal (39 digits).
pub type Digits = [u8; 40];

/// `n` in decimal, at the end of `digits`.
pub fn decimal(n: u128, digits: &mut Digits) -> &[u8] {
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// A value of at most `N` bytes assembled on the stack; what does not fit is refused with
/// an error (the caller falls back to the heap, or sized `N` so that it cannot happen).
pub struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for StackText<N> {
    fn default() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> StackText<N> {
    pub fn push(&mut self, s: &[u8]) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s);
        self.len = end;
        Ok(())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes())
    }
}

/// `text` as a value that lives as long as the process: for values made once per process
/// (an edge's state, a table of ages) and cloned by every request. Never freed, so never
/// call it per request or per reload.
pub fn static_value(text: Vec<u8>) -> Result<HeaderValue, InvalidHeaderValue> {
    let text: &'static [u8] = Box::leak(text.into_boxed_slice());
    HeaderValue::from_maybe_shared(bytes::Bytes::from_static(text))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;

    #[test]
    fn decimal_matches_the_standard_formatting() {
        for n in [0, 1, 9, 10, 99, 100, 4096, u64::MAX as u128, u128::MAX] {
            let mut digits: Digits = [0; 40];
            assert_eq!(decimal(n, &mut digits), n.to_string().as_bytes());
        }
    }

    #[test]
    fn stack_text_refuses_what_does_not_fit_and_keeps_what_did() {
        let mut text = StackText::<8>::default();
        assert!(write!(text, "abc{}", 12).is_ok());
        assert!(text.push(b"toolong").is_err());
        assert_eq!(text.as_bytes(), b"abc12");
    }
}
