//! The byte layout of log payloads: length-prefixed fields in a fixed order.
//!
//! Payloads are already checksummed by their record, so a field that does
//! not decode means the format is not ours (or a newer one), and the reader
//! says which field.

/// Builds a payload field by field.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A length (u32) then the bytes. Payloads are far below 4 GiB
    /// ([`MAX_PAYLOAD`](crate::MAX_PAYLOAD)).
    pub(crate) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.u32(value.len() as u32);
        self.bytes.extend_from_slice(value);
        self
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// A count then each pair.
    pub(crate) fn pairs(&mut self, pairs: &[(String, String)]) -> &mut Self {
        self.u32(pairs.len() as u32);
        for (key, value) in pairs {
            self.str(key).str(value);
        }
        self
    }

    /// A count then each string.
    pub(crate) fn strs(&mut self, values: &[String]) -> &mut Self {
        self.u32(values.len() as u32);
        for value in values {
            self.str(value);
        }
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// Reads a payload back in the order it was built; errors name the field.
#[derive(Debug)]
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, len: usize, field: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() < len {
            return Err(format!(
                "{field}: needs {len} bytes, {} left",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, String> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, String> {
        let raw = self.take(4, field)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, String> {
        let raw = self.take(8, field)?;
        let mut word = [0; 8];
        word.copy_from_slice(raw);
        Ok(u64::from_le_bytes(word))
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<&'a [u8], String> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    pub(crate) fn str(&mut self, field: &str) -> Result<String, String> {
        let raw = self.bytes(field)?;
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{field}: not UTF-8"))
    }

    pub(crate) fn pairs(&mut self, field: &str) -> Result<Vec<(String, String)>, String> {
        let count = self.u32(field)?;
        (0..count)
            .map(|_| Ok((self.str(field)?, self.str(field)?)))
            .collect()
    }

    pub(crate) fn strs(&mut self, field: &str) -> Result<Vec<String>, String> {
        let count = self.u32(field)?;
        (0..count).map(|_| self.str(field)).collect()
    }

    /// Fails when bytes are left over: the payload has fields we do not know.
    pub(crate) fn end(&self) -> Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected bytes at the end", self.bytes.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_in_order_and_short_input_names_the_field() {
        let pairs = vec![("A".to_string(), "1".to_string())];
        let bytes = Encoder::default()
            .u8(7)
            .u64(u64::MAX - 1)
            .str("héllo")
            .pairs(&pairs)
            .strs(&["x".into(), "y".into()])
            .finish();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u8("kind"), Ok(7));
        assert_eq!(d.u64("lsn"), Ok(u64::MAX - 1));
        assert_eq!(d.str("name").as_deref(), Ok("héllo"));
        assert_eq!(d.pairs("options"), Ok(pairs));
        assert_eq!(d.strs("topics"), Ok(vec!["x".to_string(), "y".to_string()]));
        assert_eq!(d.end(), Ok(()));

        let mut short = Decoder::new(&bytes[..4]);
        short.u8("kind").unwrap();
        let err = short.str("name").unwrap_err();
        assert!(err.starts_with("name: needs"), "{err}");
        assert!(Decoder::new(&bytes).end().is_err());
    }
}
