//! Log segment files and reading them back after a restart.
//!
//! A log is a directory of segments named by the LSN of their first record
//! (`00000000000000000001.wal`), each starting with [`MAGIC`]. Records are
//! numbered without gaps across segments, so a missing or reordered file is
//! noticed. Only the newest segment is written to, into space made ahead of
//! the writes (zeros, see `WalOptions::preallocate_bytes`): zeros from a
//! record's start to the end of the file are where the records end. A
//! record cut short or failing its checksum with no good record anywhere
//! after it is a write that was never acknowledged (acknowledgement waits
//! for the fsync) and is cut off. Anything else is damage, reported as `DATA_CORRUPTED` naming
//! the file and offset, and the file is left exactly as it was: cutting it
//! would lose acknowledged writes.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use tenantfusion_core::{Result, TenantError};

use crate::record::{Decoded, HEADER, decode, peek_lsn};

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
    /// header): where the next record goes. A torn write after them is cut
    /// off when the log opens; zeros after them are kept for later writes.
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

/// Reads every record of the log in `dir`, changing nothing: the damage
/// found (`DATA_CORRUPTED` naming the file and offset), if any, and the
/// number of segments and records. A torn tail is not damage: a write in
/// progress or one never acknowledged.
pub(crate) fn check(dir: &Path) -> Result<(usize, u64)> {
    if !dir.exists() {
        return Ok((0, 0));
    }
    let mut records = 0;
    let scan = scan(dir, |_, _| {
        records += 1;
        Ok(())
    })?;
    Ok((scan.segments.len(), records))
}

/// Reads every record in `dir` in LSN order, handing each to `each`.
pub(crate) fn scan(dir: &Path, each: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<Scan> {
    scan_with(dir, None, each)
}

/// Reads every intact record in `dir`, in LSN order, past any damage:
/// what salvage gets out of a damaged log. Each stretch passed over (a
/// damaged record up to the next intact one, a missing or foreign segment,
/// a torn tail) is described in the list returned. Changes nothing.
pub(crate) fn salvage(
    dir: &Path,
    each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    if dir.exists() {
        let scan = scan_with(dir, Some(&mut skipped), each)?;
        if scan.torn_bytes > 0
            && let Some(newest) = scan.segments.last()
        {
            skipped.push(format!(
                "{}: the last {} bytes (a write cut short, or damage with nothing after it)",
                newest.path.display(),
                scan.torn_bytes
            ));
        }
    }
    Ok(skipped)
}

/// [`scan`], or with `salvage` [`salvage`]: damage is passed over and
/// described there instead of ending the read.
fn scan_with(
    dir: &Path,
    mut salvage: Option<&mut Vec<String>>,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Scan> {
    let segments = list(dir)?;
    let mut next_lsn = segments.first().map_or(1, |s| s.first_lsn);
    let (mut valid_len, mut torn_bytes) = (0, 0);
    for (i, segment) in segments.iter().enumerate() {
        let newest = i + 1 == segments.len();
        let path = &segment.path;
        let bytes = fs::read(path).map_err(|e| io_error(path, "cannot read", e))?;
        if segment.first_lsn != next_lsn {
            let detail = format!(
                "starts at record {} but the log continues at {next_lsn}: a segment is missing",
                segment.first_lsn
            );
            match salvage.as_deref_mut() {
                Some(skipped) if segment.first_lsn > next_lsn => {
                    skipped.push(format!("{}: {detail}", path.display()));
                    next_lsn = segment.first_lsn;
                }
                _ => return Err(corrupted(path, detail)),
            }
        }
        if bytes.len() < MAGIC.len() && newest && MAGIC.starts_with(&bytes) {
            // Created, but its header never fully written: nothing in it.
            (valid_len, torn_bytes) = (0, bytes.len() as u64);
            continue;
        }
        if !bytes.starts_with(MAGIC) {
            let detail = "not a tenantfusion log segment".to_string();
            match salvage.as_deref_mut() {
                Some(skipped) => {
                    skipped.push(format!("{}: {detail}, passed over whole", path.display()));
                    continue;
                }
                None => return Err(corrupted(path, detail)),
            }
        }
        let mut offset = MAGIC.len();
        // Bytes from `offset` on that are a torn write (cut off on open).
        let mut torn = 0;
        loop {
            let damage = match decode(&bytes[offset..]) {
                Decoded::Record { lsn, payload, len } => {
                    if lsn != next_lsn {
                        let detail = format!("record {lsn} at byte {offset}, expected {next_lsn}");
                        match salvage.as_deref_mut() {
                            Some(skipped) => {
                                skipped.push(format!("{}: {detail}, passed over", path.display()));
                                offset += len;
                                if lsn > next_lsn {
                                    each(lsn, payload)?;
                                    next_lsn = lsn + 1;
                                }
                                continue;
                            }
                            None => return Err(corrupted(path, detail)),
                        }
                    }
                    each(lsn, payload)?;
                    next_lsn += 1;
                    offset += len;
                    continue;
                }
                Decoded::End => break,
                Decoded::Short => "cut short",
                Decoded::BadChecksum { .. } => "failing its checksum",
            };
            // No record starts with zeros (none is numbered 0), so only
            // space never written to is zeros from here to the end.
            if bytes[offset..].iter().all(|&b| b == 0) {
                break;
            }
            // Torn only if nothing good follows: a torn write is the last
            // thing in the newest segment. A good record after the bad one
            // means the bad one was damaged in place (its length field may
            // be what is damaged, so the search does not trust it), and
            // cutting there would lose acknowledged records.
            let after = offset + 1;
            let following = bytes
                .get(after..)
                .and_then(|rest| find_record_after(rest, next_lsn))
                .map(|(at, lsn)| (after + at, lsn));
            if let Some(skipped) = salvage.as_deref_mut()
                && (!newest || following.is_some())
            {
                match following {
                    Some((at, lsn)) => {
                        skipped.push(format!(
                            "{}: bytes {offset}..{at} (records {next_lsn}..{}) are {damage}",
                            path.display(),
                            lsn - 1
                        ));
                        offset = at;
                        next_lsn = lsn;
                        continue;
                    }
                    None => {
                        skipped.push(format!(
                            "{}: bytes {offset}.. (from record {next_lsn}) are {damage}",
                            path.display()
                        ));
                        break;
                    }
                }
            }
            if !newest || following.is_some() {
                let next = match following {
                    Some((at, lsn)) => format!("; record {lsn} follows intact at byte {at}"),
                    None => String::new(),
                };
                return Err(corrupted(
                    path,
                    format!(
                        "record {next_lsn} at byte {offset} is {damage}{next}: the log is \
                         damaged, not cut short by a crash, and was left as it is"
                    ),
                ));
            }
            // The write, and any zeros after it.
            torn = bytes.len() - offset;
            break;
        }
        if newest {
            (valid_len, torn_bytes) = (offset as u64, torn as u64);
        }
    }
    Ok(Scan {
        segments,
        next_lsn,
        valid_len,
        torn_bytes,
    })
}

/// The first good record in `bytes` numbered after `lsn`, at any byte
/// offset: its offset and LSN. Records numbered beyond what `bytes` could
/// hold are not looked at, so a random header almost never costs a
/// checksum, and the search is linear in `bytes`.
fn find_record_after(bytes: &[u8], lsn: u64) -> Option<(usize, u64)> {
    let most = (bytes.len() / HEADER) as u64;
    (0..bytes.len()).find_map(|at| {
        let candidate = peek_lsn(&bytes[at..])?;
        let plausible = candidate > lsn && candidate - lsn <= most;
        (plausible && matches!(decode(&bytes[at..]), Decoded::Record { .. }))
            .then_some((at, candidate))
    })
}

/// Makes a new file, renamed or removed entry in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "cannot sync directory", e))
}
