//! Unsigned integers in decimal, written into a caller's stack buffer: for the hot path's
//! header values and cache keys, which used to allocate a `String` per number.

/// Room for any `u128` (39 digits).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_formatting() {
        for n in [0, 1, 9, 10, 99, 100, 4096, u64::MAX as u128, u128::MAX] {
            let mut digits: Digits = [0; 40];
            assert_eq!(decimal(n, &mut digits), n.to_string().as_bytes());
        }
    }
}
