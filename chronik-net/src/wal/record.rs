//! Record framing: `[len: u32 LE][crc32c(payload): u32 LE][payload]`.

/// Bytes of the frame header.
pub const HEADER_LEN: usize = 8;

/// Largest payload a record may carry; a header claiming more is corrupt.
pub const RECORD_LEN_MAX: usize = 512 * 1024 * 1024;

/// Appends one framed record to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= RECORD_LEN_MAX,
        "record of {} bytes",
        payload.len()
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What is found at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record whose checksum matches; `next` is the offset after it.
    Record { payload: &'a [u8], next: usize },
    /// The data ends inside this record's header or body.
    Truncated,
    /// The record is whole but its checksum (or length) is wrong.
    Corrupt { reason: String, end: usize },
    /// Nothing left.
    End,
}

/// Reads the record at `offset` of `buf`.
pub fn decode(buf: &[u8], offset: usize, verify_crc: bool) -> Frame<'_> {
    let rest = &buf[offset.min(buf.len())..];
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < HEADER_LEN {
        return Frame::Truncated;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len > RECORD_LEN_MAX {
        return Frame::Corrupt {
            reason: format!("record length {len} exceeds the maximum {RECORD_LEN_MAX}"),
            end: buf.len(),
        };
    }
    if rest.len() < HEADER_LEN + len {
        return Frame::Truncated;
    }
    let payload = &rest[HEADER_LEN..HEADER_LEN + len];
    let end = offset + HEADER_LEN + len;
    if verify_crc {
        let actual = crc32c::crc32c(payload);
        if actual != crc {
            return Frame::Corrupt {
                reason: format!("checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"),
                end,
            };
        }
    }
    Frame::Record { payload, next: end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut buf = Vec::new();
            for p in &payloads {
                encode(p, &mut buf);
            }
            let mut off = 0;
            for p in &payloads {
                match decode(&buf, off, true) {
                    Frame::Record { payload, next } => {
                        prop_assert_eq!(payload, &p[..]);
                        off = next;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
            prop_assert_eq!(decode(&buf, off, true), Frame::End);
        }

        #[test]
        fn every_truncation_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..100), cut in 0usize..108) {
            let mut buf = Vec::new();
            encode(&payload, &mut buf);
            let cut = cut.min(buf.len() - 1);
            let got = decode(&buf[..cut], 0, true);
            prop_assert!(matches!(got, Frame::Truncated | Frame::End), "{:?}", got);
        }

        #[test]
        fn every_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..100), pos in 0usize..108, bit in 0u8..8) {
            let mut buf = Vec::new();
            encode(&payload, &mut buf);
            let pos = pos % buf.len();
            buf[pos] ^= 1 << bit;
            let got = decode(&buf, 0, true);
            prop_assert!(!matches!(got, Frame::Record { payload: p, .. } if p == &payload[..]), "{:?}", got);
        }
    }
}
