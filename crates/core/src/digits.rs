//! Decimal digits without the formatting machinery. The producer writes a dozen numbers into
//! every event, key and header; at a million messages a second `write!` and digit-at-a-time
//! division show in profiles (docs/BENCHMARKS.md, "Producer").

const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `v` in decimal, left-padded with zeros to at least `width` digits (at most 20), into
/// the tail of `buf`, and returns that tail.
#[inline]
pub fn decimal_padded(v: u64, width: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = v;
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    let start = buf.len() - width.min(buf.len());
    while i > start {
        i -= 1;
        buf[i] = b'0';
    }
    &buf[i..]
}

/// Appends `v` in decimal, zero-padded to at least `width` digits.
#[inline]
pub fn push_decimal(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(decimal_padded(v, width, &mut buf));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges() {
        let mut b = [0u8; 20];
        assert_eq!(decimal_padded(0, 1, &mut b), b"0");
        assert_eq!(decimal_padded(0, 0, &mut b), b"0");
        assert_eq!(decimal_padded(7, 6, &mut b), b"000007");
        assert_eq!(decimal_padded(10, 1, &mut b), b"10");
        assert_eq!(decimal_padded(99, 3, &mut b), b"099");
        assert_eq!(decimal_padded(100, 1, &mut b), b"100");
        assert_eq!(
            decimal_padded(u64::MAX, 1, &mut b),
            u64::MAX.to_string().as_bytes()
        );
        assert_eq!(decimal_padded(5, 25, &mut b), b"00000000000000000005");
    }

    proptest! {
        #[test]
        fn matches_std_formatting(v: u64, width in 0usize..=20) {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, v, width);
            let want = format!("x{v:0width$}");
            prop_assert_eq!(out, want.into_bytes());
        }
    }
}
