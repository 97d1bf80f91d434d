//! The reader side: opening a segment file read-only and validating it.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::Mmap;

use super::latency::LATENCY_BUCKETS;
use super::layout::{
    segment_bytes, Header, BLOCK_BYTES, HEADER_BYTES, LAYOUT_VERSION, MAGIC, MAX_WORKERS,
    MIN_PROBE_BYTES, VERSION_OFFSET,
};
use super::segment::{Mapping, View};
use super::{Counter, Snapshot};

/// Why a stats segment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Opening, inspecting or mapping the file failed.
    #[error("stats segment {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file does not start with `BLIPSTAT`.
    #[error(
        "stats segment {}: not a BlipMQ stats segment (starts with \"{found}\", expected \"BLIPSTAT\")",
        .path.display()
    )]
    BadMagic {
        path: PathBuf,
        /// The first 8 bytes, escaped.
        found: String,
    },
    /// The segment was written with a layout this build does not know.
    #[error(
        "stats segment {}: layout version {found} is not supported (this build reads version {supported}); use a blipmqctl from the same release as the broker",
        .path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The file is shorter than its header says it must be.
    #[error("stats segment {}: truncated: {actual} bytes, expected at least {expected}", .path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The header's fields contradict its version.
    #[error("stats segment {}: corrupt header: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// A read-only view of a stats segment: from a file written by a broker
/// ([`open`](Self::open)), or from a [`StatsSegment`](super::StatsSegment)
/// of this process ([`StatsSegment::reader`](super::StatsSegment::reader)).
///
/// Reading never blocks or slows the workers: it is relaxed loads of their
/// counters. Cheap to keep open and snapshot repeatedly.
pub struct StatsReader {
    view: View,
    /// File, device and inode, for [`replaced`](Self::replaced).
    file: Option<(PathBuf, u64, u64)>,
}

impl StatsReader {
    /// Maps the segment at `path` read-only and validates its header: magic
    /// `BLIPSTAT`, then the layout version (any version but
    /// [`LAYOUT_VERSION`] is refused with
    /// [`StatsError::UnsupportedVersion`], naming both), then the geometry
    /// (counters per block, block size, worker count) and the file length.
    ///
    /// The broker never truncates a segment it published (a restart renames
    /// a new file over it), so the mapping stays valid; see
    /// [`replaced`](Self::replaced) to notice a restart.
    pub fn open(path: &Path) -> Result<StatsReader, StatsError> {
        let io_err = |source| StatsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        if meta.len() < MIN_PROBE_BYTES as u64 {
            return Err(StatsError::Truncated {
                path: path.to_path_buf(),
                expected: HEADER_BYTES as u64,
                actual: meta.len(),
            });
        }
        // SAFETY: the mapping is read-only and only accessed through raw
        // pointers (plain reads of the header, which is never written after
        // the broker publishes the file, and relaxed atomic loads of the
        // counters). The broker never truncates a published segment; a
        // third party truncating it could fault our reads (SIGBUS), like for
        // any shared mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let len = map.len();
        let base = NonNull::new(map.as_ptr().cast_mut()).expect("mmap returned null");
        // SAFETY: `len >= MIN_PROBE_BYTES` bytes are mapped at the
        // page-aligned `base`; the version field is 4-byte aligned.
        let (magic, version) = unsafe {
            (
                base.as_ptr().cast::<[u8; 8]>().read(),
                base.as_ptr().add(VERSION_OFFSET).cast::<u32>().read(),
            )
        };
        if magic != MAGIC {
            return Err(StatsError::BadMagic {
                path: path.to_path_buf(),
                found: magic.escape_ascii().to_string(),
            });
        }
        if version != LAYOUT_VERSION {
            return Err(StatsError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: LAYOUT_VERSION,
            });
        }
        if len < HEADER_BYTES {
            return Err(StatsError::Truncated {
                path: path.to_path_buf(),
                expected: HEADER_BYTES as u64,
                actual: len as u64,
            });
        }
        // SAFETY: `len >= HEADER_BYTES >= size_of::<Header>()` bytes are
        // mapped at the page-aligned `base`; every bit pattern is a valid
        // `Header` (integers and a byte array).
        let header = unsafe { base.as_ptr().cast::<Header>().read() };
        check_header(&header, len).map_err(|e| e.with_path(path))?;
        let map = Arc::new(Mapping::ReadOnly(map));
        // SAFETY: `check_header` verified that the mapping holds
        // `segment_bytes(header.workers)` bytes; `base` is its page-aligned
        // start with `header` at offset 0.
        let view = unsafe { View::new(map, base, header) };
        Ok(StatsReader {
            view,
            file: Some((path.to_path_buf(), meta.dev(), meta.ino())),
        })
    }

    pub(crate) fn from_view(view: View, file: Option<(PathBuf, u64, u64)>) -> StatsReader {
        StatsReader { view, file }
    }

    /// Reads every counter of every worker now. Each value is read
    /// atomically, but the set is not a consistent cut: counters a worker
    /// bumps together may be seen one updated and the other not yet.
    pub fn snapshot(&self) -> Snapshot {
        self.view.snapshot()
    }

    /// Reads one counter of one worker. Panics if `worker >= workers()`.
    pub fn get(&self, worker: usize, counter: Counter) -> u64 {
        self.view.load(worker, counter)
    }

    /// Number of worker blocks.
    pub fn workers(&self) -> usize {
        self.view.workers()
    }

    /// The layout version (always [`LAYOUT_VERSION`] once opened).
    pub fn version(&self) -> u32 {
        self.view.header.version
    }

    /// Process id of the broker that created the segment.
    pub fn pid(&self) -> u32 {
        self.view.header.pid
    }

    /// When that broker started, in nanoseconds since the Unix epoch.
    pub fn start_unix_nanos(&self) -> u64 {
        self.view.header.start_unix_nanos
    }

    /// The file this reader mapped, `None` for an in-process reader.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _, _)| p.as_path())
    }

    /// Whether the file at [`path`](Self::path) is no longer the one mapped
    /// (a broker restart renamed a new segment over it, or it was removed):
    /// the values read here have stopped moving and the caller should
    /// [`open`](Self::open) again. Always `false` for in-process readers.
    pub fn replaced(&self) -> bool {
        match &self.file {
            None => false,
            Some((path, dev, ino)) => match std::fs::metadata(path) {
                Ok(meta) => meta.dev() != *dev || meta.ino() != *ino,
                Err(_) => true,
            },
        }
    }
}

impl fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsReader")
            .field("path", &self.path())
            .field("header", &self.view.header)
            .finish()
    }
}

/// A header problem found before the path is attached.
enum HeaderError {
    Corrupt(String),
    Truncated { expected: u64, actual: u64 },
}

impl HeaderError {
    fn with_path(self, path: &Path) -> StatsError {
        let path = path.to_path_buf();
        match self {
            HeaderError::Corrupt(reason) => StatsError::Corrupt { path, reason },
            HeaderError::Truncated { expected, actual } => StatsError::Truncated {
                path,
                expected,
                actual,
            },
        }
    }
}

/// Checks a version-1 header's geometry against the mapped length.
fn check_header(h: &Header, len: usize) -> Result<(), HeaderError> {
    if h.counters as usize != Counter::COUNT {
        return Err(HeaderError::Corrupt(format!(
            "{} counters per worker, version {LAYOUT_VERSION} has {}",
            h.counters,
            Counter::COUNT
        )));
    }
    if h.latency_buckets as usize != LATENCY_BUCKETS {
        return Err(HeaderError::Corrupt(format!(
            "{} latency buckets, version {LAYOUT_VERSION} has {LATENCY_BUCKETS}",
            h.latency_buckets
        )));
    }
    if h.block_bytes as usize != BLOCK_BYTES {
        return Err(HeaderError::Corrupt(format!(
            "{}-byte worker blocks, version {LAYOUT_VERSION} has {BLOCK_BYTES}",
            h.block_bytes
        )));
    }
    if h.header_bytes as usize != HEADER_BYTES {
        return Err(HeaderError::Corrupt(format!(
            "{}-byte header, version {LAYOUT_VERSION} has {HEADER_BYTES}",
            h.header_bytes
        )));
    }
    let workers = h.workers as usize;
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(HeaderError::Corrupt(format!(
            "{workers} workers, expected 1..={MAX_WORKERS}"
        )));
    }
    let need = segment_bytes(workers);
    if len < need {
        return Err(HeaderError::Truncated {
            expected: need as u64,
            actual: len as u64,
        });
    }
    Ok(())
}
