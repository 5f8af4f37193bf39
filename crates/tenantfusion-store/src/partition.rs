//! How a partition is named: in log records and manifests (a tag and a
//! name) and in object paths (a directory name no user name can break).

use std::fmt::Write as _;

use tenantfusion_core::UserId;
use tenantfusion_tables::PartitionKey;

use crate::codec::{Decoder, Encoder};

const SHARED: u8 = 0;
const USER: u8 = 1;
const TOPIC: u8 = 2;

/// Writes `partition` as a tag and a name.
pub(crate) fn encode_key(out: &mut Encoder, partition: &PartitionKey) {
    match partition {
        PartitionKey::Shared => out.u8(SHARED).str(""),
        PartitionKey::User(user) => out.u8(USER).str(user.as_str()),
        PartitionKey::Topic(topic) => out.u8(TOPIC).str(topic),
    };
}

/// Reads what [`encode_key`] wrote.
pub(crate) fn decode_key(input: &mut Decoder<'_>) -> Result<PartitionKey, String> {
    let tag = input.u8("partition")?;
    let name = input.str("partition")?;
    match tag {
        SHARED => Ok(PartitionKey::Shared),
        USER => Ok(PartitionKey::User(UserId::new(name))),
        TOPIC => Ok(PartitionKey::Topic(name.into())),
        other => Err(format!("unknown partition kind {other}")),
    }
}

/// The directory of a partition's segments: `shared`, `u-{user}` or
/// `t-{topic}`, with every byte outside `[A-Za-z0-9_-]` written as `=XX`,
/// so distinct names give distinct directories and none is `.` or `..`.
pub(crate) fn dir_name(partition: &PartitionKey) -> String {
    let escaped = |prefix: &str, name: &str| {
        let mut out = String::with_capacity(prefix.len() + name.len());
        out.push_str(prefix);
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
                out.push(char::from(byte));
            } else {
                let _ = write!(out, "={byte:02X}");
            }
        }
        out
    };
    match partition {
        PartitionKey::Shared => "shared".to_string(),
        PartitionKey::User(user) => escaped("u-", user.as_str()),
        PartitionKey::Topic(topic) => escaped("t-", topic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_directory_names_are_distinct_and_safe() {
        let keys = [
            PartitionKey::Shared,
            PartitionKey::User(UserId::new("alice")),
            PartitionKey::User(UserId::new("a/b")),
            PartitionKey::User(UserId::new("a=2Fb")),
            PartitionKey::User(UserId::new("..")),
            PartitionKey::User(UserId::new("shared")),
            PartitionKey::Topic("AAPL".into()),
        ];
        let mut names = std::collections::HashSet::new();
        for key in &keys {
            let mut out = Encoder::default();
            encode_key(&mut out, key);
            let bytes = out.finish();
            assert_eq!(decode_key(&mut Decoder::new(&bytes)).as_ref(), Ok(key));
            let name = dir_name(key);
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
                "{name}"
            );
            assert!(names.insert(name.clone()), "{name} given twice");
        }
        assert_eq!(dir_name(&keys[2]), "u-a=2Fb");
        assert_eq!(dir_name(&keys[3]), "u-a=3D2Fb");
    }
}
