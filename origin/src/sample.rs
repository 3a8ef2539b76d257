//! The bundled sample site: small files embedded in the binary plus one large generated
//! file, written to a node's data directory at start-up.
//!
//! Every file gets the same fixed modification time on every node, so that all origins
//! of a deployment send identical `ETag` and `Last-Modified` values for the same file
//! (edges revalidate a copy fetched from one origin against another).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Path of the large generated file inside the sample site.
pub const LARGE_FILE: &str = "large/big.bin";

/// Size of [`LARGE_FILE`]: 24 MiB.
pub const LARGE_FILE_SIZE: u64 = 24 * 1024 * 1024;

/// The modification time of every sample file: 2024-01-01T00:00:00Z.
pub fn fixed_mtime() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200)
}

/// The hand-written files, by path relative to the site root.
const FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../sample/index.html")),
    ("about.html", include_bytes!("../sample/about.html")),
    ("assets/app.css", include_bytes!("../sample/assets/app.css")),
    ("assets/app.js", include_bytes!("../sample/assets/app.js")),
    // Large enough (about 30 KiB) for the edge's compression to apply.
    (
        "assets/catalogue.json",
        include_bytes!("../sample/assets/catalogue.json"),
    ),
    (
        "assets/logo.svg",
        include_bytes!("../sample/assets/logo.svg"),
    ),
    (
        "images/photo.png",
        include_bytes!("../sample/images/photo.png"),
    ),
];

/// Writes the sample site under `dir` (created if missing) and returns `dir`.
///
/// Files already present with the right contents are left alone; the large file is
/// only generated when it is missing or has the wrong size.
pub fn materialise(dir: &Path) -> io::Result<PathBuf> {
    for (name, contents) in FILES {
        let path = dir.join(name);
        if fs::read(&path).ok().as_deref() != Some(*contents) {
            edgebox_node::fs::atomic_write_with(&path, |file| file.write_all(contents))?;
        }
        set_fixed_mtime(&path)?;
    }
    let large = dir.join(LARGE_FILE);
    let current_size = fs::metadata(&large).map(|meta| meta.len()).ok();
    if current_size != Some(LARGE_FILE_SIZE) {
        tracing::info!(
            size = LARGE_FILE_SIZE,
            "generating the sample site's large file"
        );
        edgebox_node::fs::atomic_write_with(&large, |file| write_large(file, LARGE_FILE_SIZE))?;
    }
    set_fixed_mtime(&large)?;
    Ok(dir.to_path_buf())
}

fn set_fixed_mtime(path: &Path) -> io::Result<()> {
    let file = fs::File::options().write(true).open(path)?;
    file.set_modified(fixed_mtime())
}

/// Writes `size` deterministic bytes: blocks of pseudo-random bytes alternating with
/// blocks of pseudo-random words, so that compressing it behaves like real mixed content
/// (neither all zeros nor entirely incompressible).
pub(crate) fn write_large(out: &mut impl Write, size: u64) -> io::Result<()> {
    const WORDS: &[&[u8]] = &[
        b"edge ",
        b"origin ",
        b"cache ",
        b"shield ",
        b"latency ",
        b"region ",
        b"request ",
        b"response ",
        b"header ",
        b"range ",
        b"byte ",
        b"tier ",
        b"memory ",
        b"disk ",
        b"purge ",
        b"stale ",
        b"fresh ",
        b"sandbox ",
        b"job ",
        b"line\n",
    ];
    const BLOCK: usize = 64 * 1024;
    let mut rng = SplitMix64(0x5EED_ED6E_B0C5_0001);
    let mut block = Vec::with_capacity(BLOCK + 16);
    let mut written = 0u64;
    while written < size {
        block.clear();
        if rng.next().is_multiple_of(2) {
            while block.len() < BLOCK {
                block.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            while block.len() < BLOCK {
                let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
                block.extend_from_slice(word);
            }
        }
        let take = (size - written).min(BLOCK as u64) as usize;
        out.write_all(&block[..take])?;
        written += take as u64;
    }
    Ok(())
}

/// A tiny, fast, fixed-seed generator (SplitMix64): enough for filler content.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
