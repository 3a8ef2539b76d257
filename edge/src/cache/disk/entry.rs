//! The entry file format (see the table in `disk`'s docs): the fixed header, its checksum,
//! reading and verifying an entry's prefix and body, and rewriting an entry's meta.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::cache::key::HashBinary;

const MAGIC: &[u8; 8] = b"EBXCACHE";
pub(super) const VERSION: u32 = 1;
pub(super) const HEADER_LEN: usize = 56;
/// Body bytes per checksummed chunk; also the unit of streamed reads.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Bodies up to this size are verified whole at lookup; larger ones chunk by chunk.
pub const VERIFY_WHOLE_MAX: u64 = 1024 * 1024;
/// Sanity bounds on header fields, so a damaged header cannot make us allocate wildly or
/// overflow the offsets computed from it (also checked in debug builds: a bad entry is
/// deleted, never a panic).
pub(super) const MAX_META_BYTES: usize = 1024 * 1024;
/// No body is larger than this (1 TiB): with the bounds above, every offset and length
/// derived from a header then fits a `u64` with room to spare.
const MAX_BODY_BYTES: u64 = 1 << 40;
/// Chunk sizes a header may name (the writer uses [`CHUNK_SIZE`]).
const CHUNK_SIZES: std::ops::RangeInclusive<u32> = 4096..=64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cache entry is damaged: {0}")]
    Corrupt(&'static str),
    #[error("cache file I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// The parsed fixed header of an entry file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub(super) chunk_size: u32,
    pub(super) key: HashBinary,
    pub(super) url_len: u32,
    pub(super) meta_internal_len: u32,
    pub(super) meta_header_len: u32,
    pub(super) body_len: u64,
    pub(super) crc: u32,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.chunk_size.to_le_bytes());
        out[16..32].copy_from_slice(&self.key);
        out[32..36].copy_from_slice(&self.url_len.to_le_bytes());
        out[36..40].copy_from_slice(&self.meta_internal_len.to_le_bytes());
        out[40..44].copy_from_slice(&self.meta_header_len.to_le_bytes());
        out[44..52].copy_from_slice(&self.body_len.to_le_bytes());
        out[52..56].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    pub(super) fn decode(raw: &[u8; HEADER_LEN]) -> Result<Self, DiskError> {
        let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap());
        if &raw[0..8] != MAGIC {
            return Err(DiskError::Corrupt("bad magic"));
        }
        if u32_at(8) != VERSION {
            return Err(DiskError::Corrupt("unknown format version"));
        }
        let header = Header {
            chunk_size: u32_at(12),
            key: raw[16..32].try_into().unwrap(),
            url_len: u32_at(32),
            meta_internal_len: u32_at(36),
            meta_header_len: u32_at(40),
            body_len: u64::from_le_bytes(raw[44..52].try_into().unwrap()),
            crc: u32_at(52),
        };
        if !CHUNK_SIZES.contains(&header.chunk_size) {
            return Err(DiskError::Corrupt("bad chunk size"));
        }
        if header.url_len as usize > crate::cache::key::MAX_URL_BYTES
            || header.meta_internal_len as usize > MAX_META_BYTES
            || header.meta_header_len as usize > MAX_META_BYTES
        {
            return Err(DiskError::Corrupt("implausible lengths"));
        }
        if header.body_len > MAX_BODY_BYTES {
            return Err(DiskError::Corrupt("implausible body length"));
        }
        Ok(header)
    }

    pub(super) fn chunks(&self) -> u64 {
        self.body_len.div_ceil(self.chunk_size as u64)
    }

    pub(super) fn prefix_len(&self) -> u64 {
        (self.url_len + self.meta_internal_len + self.meta_header_len) as u64
    }

    pub(super) fn body_offset(&self) -> u64 {
        HEADER_LEN as u64 + self.prefix_len()
    }

    pub(super) fn total_len(&self) -> u64 {
        self.body_offset() + self.body_len + self.chunks() * 4
    }
}

pub(super) fn header_crc(fixed: &[u8; HEADER_LEN], prefix: &[u8], table: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&fixed[..52]);
    hasher.update(prefix);
    hasher.update(table);
    hasher.finalize()
}

/// What a lookup found on disk.
pub struct DiskObject {
    pub url: String,
    pub meta: (Vec<u8>, Vec<u8>),
    pub body: DiskBody,
}

pub enum DiskBody {
    /// Small body, already read and verified.
    Whole(Bytes),
    /// Large body, to be read chunk by chunk, each verified before use.
    Chunked(ChunkedBody),
}

/// An open large entry. Reads use positional I/O on a shared handle, so a purge or rewrite of
/// the file meanwhile (unlink/rename) does not disturb a reader: it keeps the inode it opened.
#[derive(Clone)]
pub struct ChunkedBody {
    file: Arc<File>,
    key: HashBinary,
    body_offset: u64,
    pub body_len: u64,
    chunk_size: u64,
    crcs: Arc<[u32]>,
}

impl ChunkedBody {
    /// Read and verify chunk `index`.
    pub(super) fn read_chunk(&self, index: u64) -> Result<Bytes, DiskError> {
        let expected = usize::try_from(index)
            .ok()
            .and_then(|i| self.crcs.get(i).copied())
            .ok_or(DiskError::Corrupt("chunk index beyond the body"))?;
        let start = index * self.chunk_size;
        let len = self.chunk_size.min(self.body_len - start) as usize;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, self.body_offset + start)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    DiskError::Corrupt("truncated body")
                } else {
                    DiskError::Io(e)
                }
            })?;
        if crc32fast::hash(&buf) != expected {
            return Err(DiskError::Corrupt("body chunk checksum mismatch"));
        }
        Ok(Bytes::from(buf))
    }
}

/// Read and check an entry's header, URL, meta and chunk table (not the body).
#[allow(clippy::type_complexity)]
pub(super) fn read_prefix(
    path: &Path,
    key: &HashBinary,
) -> Result<(Header, String, (Vec<u8>, Vec<u8>), (File, Vec<u32>)), DiskError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut raw = [0u8; HEADER_LEN];
    file.read_exact_at(&mut raw, 0)
        .map_err(|_| DiskError::Corrupt("truncated header"))?;
    let header = Header::decode(&raw)?;
    if &header.key != key {
        return Err(DiskError::Corrupt("key mismatch"));
    }
    if file_len != header.total_len() {
        return Err(DiskError::Corrupt(
            "file length does not match its header (truncated?)",
        ));
    }
    let mut prefix = vec![0u8; header.prefix_len() as usize];
    file.read_exact_at(&mut prefix, HEADER_LEN as u64)?;
    let mut table = vec![0u8; header.chunks() as usize * 4];
    file.read_exact_at(&mut table, header.body_offset() + header.body_len)?;
    if header_crc(&raw, &prefix, &table) != header.crc {
        return Err(DiskError::Corrupt("header checksum mismatch"));
    }
    let crcs = table
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let meta_header = prefix.split_off((header.url_len + header.meta_internal_len) as usize);
    let meta_internal = prefix.split_off(header.url_len as usize);
    let url = String::from_utf8_lossy(&prefix).into_owned();
    Ok((header, url, (meta_internal, meta_header), (file, crcs)))
}

/// Open an entry for a hit, verifying it as described in the module docs.
pub(super) fn open_entry(path: &Path, key: &HashBinary) -> Result<DiskObject, DiskError> {
    let (header, url, meta, (file, crcs)) = read_prefix(path, key)?;
    let chunked = ChunkedBody {
        file: Arc::new(file),
        key: *key,
        body_offset: header.body_offset(),
        body_len: header.body_len,
        chunk_size: header.chunk_size as u64,
        crcs: crcs.into(),
    };
    let body = if header.body_len <= VERIFY_WHOLE_MAX {
        let mut whole = BytesMut::with_capacity(header.body_len as usize);
        for index in 0..header.chunks() {
            whole.extend_from_slice(&chunked.read_chunk(index)?);
        }
        DiskBody::Whole(whole.freeze())
    } else {
        DiskBody::Chunked(chunked)
    };
    Ok(DiskObject { url, meta, body })
}

/// Copy entry `path` into `temp` with a new meta, verifying the body while copying, then
/// rename it over `path`. Returns the new file size.
pub(super) fn rewrite_meta(
    path: &Path,
    temp: &Path,
    key: &HashBinary,
    meta: &(Vec<u8>, Vec<u8>),
) -> Result<u64, DiskError> {
    let (old, url, _, (file, crcs)) = read_prefix(path, key)?;
    let body = ChunkedBody {
        file: Arc::new(file),
        key: *key,
        body_offset: old.body_offset(),
        body_len: old.body_len,
        chunk_size: old.chunk_size as u64,
        crcs: crcs.clone().into(),
    };
    let mut prefix = Vec::with_capacity(url.len() + meta.0.len() + meta.1.len());
    prefix.extend_from_slice(url.as_bytes());
    prefix.extend_from_slice(&meta.0);
    prefix.extend_from_slice(&meta.1);
    let table: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
    let mut header = Header {
        meta_internal_len: meta.0.len() as u32,
        meta_header_len: meta.1.len() as u32,
        crc: 0,
        ..old
    };
    header.crc = header_crc(&header.encode(), &prefix, &table);
    let result = (|| -> Result<(), DiskError> {
        let mut out =
            io::BufWriter::new(OpenOptions::new().write(true).create_new(true).open(temp)?);
        out.write_all(&header.encode())?;
        out.write_all(&prefix)?;
        for index in 0..old.chunks() {
            // Verified on the way through: a damaged body is not laundered into a fresh checksum.
            out.write_all(&body.read_chunk(index)?)?;
        }
        out.write_all(&table)?;
        // Flushed to the file, not fsynced (`cache/disk.rs`: why entries are not fsynced).
        out.into_inner().map_err(|e| e.into_error())?;
        fs::rename(temp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    result.map(|()| header.total_len())
}

pub(crate) fn hex(key: &HashBinary) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read chunk-wise from a large entry; used by the tiered hit handler.
pub(crate) async fn read_chunk(body: &ChunkedBody, index: u64) -> Result<Bytes, DiskError> {
    let body = body.clone();
    tokio::task::spawn_blocking(move || body.read_chunk(index))
        .await
        .map_err(|e| DiskError::Io(io::Error::other(e)))?
}

impl ChunkedBody {
    pub fn key(&self) -> &HashBinary {
        &self.key
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }
}
