//! One log record as it lies on disk:
//!
//! ```text
//! len: u32 | crc32: u32 | lsn: u64 | payload: [u8; len]     (little endian)
//! ```
//!
//! The checksum covers the LSN and the payload, so a record copied to the
//! wrong place, cut short or overwritten is told apart from a good one.

/// Bytes before the payload.
pub(crate) const HEADER: usize = 16;

/// The largest payload a record may carry. A statement's rows travel in one
/// record (so a statement is replayed whole or not at all); bigger writes
/// are refused rather than split.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// Appends the record `lsn` carrying `payload` to `out`.
pub(crate) fn encode(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(lsn, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
}

fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// What lies at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole record whose checksum holds; it took `len` bytes.
    Record {
        lsn: u64,
        payload: &'a [u8],
        len: usize,
    },
    /// Nothing: the buffer is empty.
    End,
    /// Fewer bytes than the header announces: a write cut short.
    Short,
    /// All bytes are there but the checksum fails; the bad record took
    /// `len` bytes (as its possibly damaged header says).
    BadChecksum { len: usize },
}

/// The LSN field of a record header at the start of `buf`, unchecked.
pub(crate) fn peek_lsn(buf: &[u8]) -> Option<u64> {
    let bytes = buf.get(8..HEADER)?;
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(bytes);
    Some(u64::from_le_bytes(lsn))
}

/// Reads the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.is_empty() {
        return Decoded::End;
    }
    let Some(header) = buf.get(..HEADER) else {
        return Decoded::Short;
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let payload_len = word(0) as usize;
    let crc = word(4);
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(&header[8..16]);
    let lsn = u64::from_le_bytes(lsn_bytes);
    if payload_len > MAX_PAYLOAD {
        return Decoded::BadChecksum { len: HEADER };
    }
    let Some(payload) = buf.get(HEADER..HEADER + payload_len) else {
        return Decoded::Short;
    };
    if checksum(lsn, payload) != crc {
        return Decoded::BadChecksum {
            len: HEADER + payload_len,
        };
    }
    Decoded::Record {
        lsn,
        payload,
        len: HEADER + payload_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_seen() {
        let mut buf = Vec::new();
        encode(7, b"hello", &mut buf);
        encode(8, b"", &mut buf);
        let Decoded::Record { lsn, payload, len } = decode(&buf) else {
            panic!("{:?}", decode(&buf));
        };
        assert_eq!((lsn, payload, len), (7, &b"hello"[..], HEADER + 5));
        assert!(matches!(
            decode(&buf[len..]),
            Decoded::Record { lsn: 8, .. }
        ));
        assert_eq!(decode(&buf[len + HEADER..]), Decoded::End);

        // Cut anywhere inside the first record: short.
        for cut in 1..len {
            assert_eq!(decode(&buf[..cut]), Decoded::Short, "cut at {cut}");
        }
        // A flipped bit anywhere but the length: bad checksum.
        for at in 4..len {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            assert_eq!(decode(&bad), Decoded::BadChecksum { len }, "flip at {at}");
        }
    }
}
