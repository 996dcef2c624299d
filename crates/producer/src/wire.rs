//! Header values written without the formatting machinery: the send loop builds five headers per
//! message, and at a million messages a second `format!` shows in profiles.

use fleetstream_obs::trace::TraceParent;

/// Decimal digits of `v` in `buf`; returns the written tail.
pub(crate) fn decimal(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    fleetstream_core::digits::decimal_padded(v, 1, buf)
}

fn hex_into(v: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (4 * (n - 1 - i))) & 0xf) as usize];
    }
}

/// W3C `traceparent` (`00-<trace>-<span>-<flags>`), as `TraceParent`'s `Display` writes it.
pub(crate) fn traceparent(t: &TraceParent, out: &mut [u8; 55]) {
    out[..3].copy_from_slice(b"00-");
    hex_into(t.trace_id, &mut out[3..35]);
    out[35] = b'-';
    hex_into(u128::from(t.span_id), &mut out[36..52]);
    out[52..].copy_from_slice(if t.sampled { b"-01" } else { b"-00" });
}

/// Message ids of one run: `<run as 16 hex digits>-<seq>` (`fleetstream_core::MessageId`'s
/// text form).
pub(crate) struct IdWriter {
    buf: Vec<u8>,
}

impl IdWriter {
    pub(crate) fn new(run: u64) -> Self {
        let mut buf = vec![0u8; 17];
        hex_into(u128::from(run), &mut buf[..16]);
        buf[16] = b'-';
        IdWriter { buf }
    }

    /// The id of `seq`.
    pub(crate) fn id(&mut self, seq: u64) -> &[u8] {
        self.buf.truncate(17);
        let mut d = [0u8; 20];
        self.buf.extend_from_slice(decimal(seq, &mut d));
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canonical(run: u64, seq: u64) -> String {
        fleetstream_core::MessageId { run, seq }.to_string()
    }

    proptest! {
        #[test]
        fn fast_writers_match_the_canonical_forms(run: u64, seq: u64, trace_id: u128, span_id: u64, sampled: bool) {
            let mut w = IdWriter::new(run);
            let want = canonical(run, seq);
            prop_assert_eq!(w.id(seq), want.as_bytes());
            let mut d = [0u8; 20];
            let want = seq.to_string();
            prop_assert_eq!(decimal(seq, &mut d), want.as_bytes());
            let mut t = [0u8; 55];
            let tp = TraceParent { trace_id, span_id, sampled };
            traceparent(&tp, &mut t);
            let want = tp.to_string();
            prop_assert_eq!(&t[..], want.as_bytes());
        }
    }
}
