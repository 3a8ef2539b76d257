//! Writing an entry: body chunks stream to a temp file as they fill, each checksummed; the
//! commit writes the chunk table and the real header and renames into place (no fsync: see
//! "Why entries are not fsynced" in `cache/disk.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use pingora::cache::key::HashBinary;

use super::DiskTier;
use super::entry::{CHUNK_SIZE, HEADER_LEN, Header, MAX_META_BYTES, header_crc};
use crate::cache::Tier;
use crate::cache::metrics::bump;

impl DiskTier {
    /// Start writing `key`. Nothing is visible to readers until [`DiskWriter::commit`].
    pub async fn writer(
        &'static self,
        key: HashBinary,
        url: String,
        meta: (Vec<u8>, Vec<u8>),
    ) -> Option<DiskWriter> {
        if meta.0.len() > MAX_META_BYTES || meta.1.len() > MAX_META_BYTES {
            return None;
        }
        let temp = self.temp_path(&key);
        let mut prefix = Vec::with_capacity(url.len() + meta.0.len() + meta.1.len());
        prefix.extend_from_slice(url.as_bytes());
        prefix.extend_from_slice(&meta.0);
        prefix.extend_from_slice(&meta.1);
        let header = Header {
            chunk_size: CHUNK_SIZE as u32,
            key,
            url_len: url.len() as u32,
            meta_internal_len: meta.0.len() as u32,
            meta_header_len: meta.1.len() as u32,
            body_len: 0,
            crc: 0,
        };
        let opened = {
            let temp = temp.clone();
            let prefix_ = prefix.clone();
            tokio::task::spawn_blocking(move || -> io::Result<File> {
                if let Some(dir) = temp.parent() {
                    fs::create_dir_all(dir)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&temp)?;
                // Placeholder header (zero checksum, never valid): rewritten at commit.
                file.write_all(&header.encode())?;
                file.write_all(&prefix_)?;
                Ok(file)
            })
            .await
        };
        match opened {
            Ok(Ok(file)) => Some(DiskWriter {
                tier: self,
                header,
                prefix,
                temp,
                file: Some(file),
                pending: BytesMut::with_capacity(CHUNK_SIZE),
                crcs: Vec::new(),
                written: 0,
            }),
            Ok(Err(e)) => {
                self.write_failed(&e);
                let _ = fs::remove_file(&temp);
                None
            }
            Err(_) => None,
        }
    }
}

/// An entry being written: body chunks go to the temp file as they fill, each checksummed.
pub struct DiskWriter {
    tier: &'static DiskTier,
    header: Header,
    prefix: Vec<u8>,
    temp: PathBuf,
    file: Option<File>,
    pending: BytesMut,
    crcs: Vec<u32>,
    written: u64,
}

impl DiskWriter {
    /// Body bytes accepted so far.
    pub fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append body bytes. Errors (full disk...) are returned; the caller then drops the writer,
    /// which deletes the temp file.
    pub async fn write(&mut self, mut data: Bytes) -> io::Result<()> {
        if self.len() + data.len() as u64 > self.tier.max_object {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "object exceeds the disk cache's per-object limit",
            ));
        }
        while !data.is_empty() {
            let room = CHUNK_SIZE - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data.split_to(take));
            if self.pending.len() == CHUNK_SIZE {
                self.flush_chunk().await?;
            }
        }
        Ok(())
    }

    async fn flush_chunk(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = self.pending.split().freeze();
        self.crcs.push(crc32fast::hash(&chunk));
        let offset = HEADER_LEN as u64 + self.prefix.len() as u64 + self.written;
        self.written += chunk.len() as u64;
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("writer already failed"))?;
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all_at(&chunk, offset);
            (file, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = Some(file);
        result
    }

    /// Finish the entry: write the chunk table and the real header, and — when
    /// `admission` still holds — rename into place, index it and evict least recently used
    /// entries beyond the budget. `Ok(None)`: a purge since the fill started selects the
    /// entry, so it was dropped unseen.
    ///
    /// The check, the rename and the indexing happen under the purge log's lock
    /// (`cache::purges`), so a purge either refuses this entry or finds it indexed.
    pub async fn commit(mut self, admission: Admission) -> io::Result<Option<u64>> {
        self.flush_chunk().await?;
        let mut header = self.header;
        header.body_len = self.written;
        let table: Vec<u8> = self.crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
        header.crc = header_crc(&header.encode(), &self.prefix, &table);
        let size = header.total_len();
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("writer already failed"))?;
        let temp = self.temp.clone();
        let tier = self.tier;
        let key = header.key;
        let path = tier.path_of(&key);
        let table_at = header.body_offset() + header.body_len;
        let victims =
            tokio::task::spawn_blocking(move || -> io::Result<Option<Vec<HashBinary>>> {
                file.write_all_at(&table, table_at)?;
                file.write_all_at(&header.encode(), 0)?;
                let purges = tier.shared.purges.lock();
                if purges.purged_since(admission.epoch, &admission.url, &admission.tags) {
                    drop(purges);
                    let _ = fs::remove_file(&temp);
                    return Ok(None);
                }
                fs::rename(&temp, &path)?;
                let victims = {
                    let mut state = tier.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.insert(key, size);
                    state.evict_to(tier.budget)
                };
                tier.shared
                    .index
                    .record(key, &admission.url, &admission.tags, Tier::L2);
                drop(purges);
                Ok(Some(victims))
            })
            .await
            .map_err(io::Error::other)??;
        let Some(victims) = victims else {
            return Ok(None);
        };
        for victim in victims {
            bump(&tier.shared.metrics.l2_evictions);
            tier.shared.index.forget(&victim, Tier::L2);
            let path = tier.path_of(&victim);
            let _ = tokio::task::spawn_blocking(move || fs::remove_file(path)).await;
        }
        Ok(Some(size))
    }
}

/// What a fill must pass to be stored: no purge since `epoch` selects an object at `url`
/// with `tags` (`cache::purges`).
#[derive(Debug, Clone)]
pub struct Admission {
    pub epoch: u64,
    pub url: String,
    pub tags: Vec<String>,
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        // Abandoned (error, cancelled response) before commit: the temp file goes, never served.
        // After a commit the temp path no longer exists and this is a no-op.
        let _ = fs::remove_file(&self.temp);
    }
}
