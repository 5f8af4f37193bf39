//! Log segment files and reading them back after a restart.
//!
//! A log is a directory of segments named by the LSN of their first record
//! (`00000000000000000001.wal`), each starting with [`MAGIC`]. Records are
//! numbered without gaps across segments, so a missing or reordered file is
//! noticed. Only the newest segment is written to; a record cut short or
//! failing its checksum at its end is a write that was never acknowledged
//! (acknowledgement waits for the fsync) and is cut off. Damage anywhere
//! else is reported, naming the file: it would lose acknowledged writes.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use tenantfusion_core::{Result, TenantError};

use crate::record::{Decoded, decode};

/// The first bytes of every segment: format name and version.
pub(crate) const MAGIC: &[u8; 8] = b"TFWAL001";

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// LSN of its first record.
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
}

impl Segment {
    pub(crate) fn new(dir: &Path, first_lsn: u64) -> Self {
        Self {
            first_lsn,
            path: dir.join(format!("{first_lsn:020}.wal")),
        }
    }
}

/// What reading a log found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Every segment, oldest first.
    pub(crate) segments: Vec<Segment>,
    /// The LSN the next record gets.
    pub(crate) next_lsn: u64,
    /// Bytes of the newest segment that hold whole, good records (with the
    /// header); the rest is cut off when the log opens.
    pub(crate) valid_len: u64,
    /// Bytes cut off the newest segment: a write that was not acknowledged.
    pub(crate) torn_bytes: u64,
}

pub(crate) fn io_error(path: &Path, what: &str, err: std::io::Error) -> TenantError {
    TenantError::Storage(format!("{what} {}: {err}", path.display()))
}

fn corrupted(path: &Path, detail: String) -> TenantError {
    TenantError::Corrupted {
        file: path.display().to_string(),
        detail,
    }
}

/// The segments in `dir`, oldest first; other files are left alone.
fn list(dir: &Path) -> Result<Vec<Segment>> {
    let entries = fs::read_dir(dir).map_err(|e| io_error(dir, "cannot list", e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, "cannot list", e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(first_lsn) = stem.parse::<u64>()
        {
            segments.push(Segment::new(dir, first_lsn));
        }
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// Reads every record in `dir` in LSN order, handing each to `each`.
pub(crate) fn scan(dir: &Path, mut each: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<Scan> {
    let segments = list(dir)?;
    let mut next_lsn = segments.first().map_or(1, |s| s.first_lsn);
    let (mut valid_len, mut torn_bytes) = (0, 0);
    for (i, segment) in segments.iter().enumerate() {
        let newest = i + 1 == segments.len();
        let path = &segment.path;
        let bytes = fs::read(path).map_err(|e| io_error(path, "cannot read", e))?;
        if segment.first_lsn != next_lsn {
            return Err(corrupted(
                path,
                format!(
                    "starts at record {} but the log continues at {next_lsn}: a segment is missing",
                    segment.first_lsn
                ),
            ));
        }
        if bytes.len() < MAGIC.len() && newest && MAGIC.starts_with(&bytes) {
            // Created, but its header never fully written: nothing in it.
            (valid_len, torn_bytes) = (0, bytes.len() as u64);
            continue;
        }
        if !bytes.starts_with(MAGIC) {
            return Err(corrupted(path, "not a tenantfusion log segment".into()));
        }
        let mut offset = MAGIC.len();
        loop {
            let damage = match decode(&bytes[offset..]) {
                Decoded::Record { lsn, payload, len } => {
                    if lsn != next_lsn {
                        return Err(corrupted(
                            path,
                            format!("record {lsn} at byte {offset}, expected {next_lsn}"),
                        ));
                    }
                    each(lsn, payload)?;
                    next_lsn += 1;
                    offset += len;
                    continue;
                }
                Decoded::End => break,
                Decoded::Short => "cut short",
                Decoded::BadChecksum { len } => {
                    // A torn write leaves nothing good after it; a good
                    // record after a bad one means the bad one was damaged
                    // in place, and acknowledged rows may be lost.
                    let after = bytes.get(offset + len..).unwrap_or_default();
                    if newest && !matches!(decode(after), Decoded::Record { .. }) {
                        "checksum mismatch"
                    } else {
                        return Err(corrupted(
                            path,
                            format!("record {next_lsn} at byte {offset} fails its checksum"),
                        ));
                    }
                }
            };
            if !newest {
                return Err(corrupted(
                    path,
                    format!("record {next_lsn} at byte {offset} is {damage}"),
                ));
            }
            break;
        }
        if newest {
            (valid_len, torn_bytes) = (offset as u64, (bytes.len() - offset) as u64);
        }
    }
    Ok(Scan {
        segments,
        next_lsn,
        valid_len,
        torn_bytes,
    })
}

/// Makes a new file, renamed or removed entry in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "cannot sync directory", e))
}
