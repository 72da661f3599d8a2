//! The data plane's config cache: its last applied config on disk, so a restarted data plane
//! serves again before (or without) the control plane (Kong keeps `dbless.lmdb` for this).
//!
//! Layout: one header line, then the body.
//!
//! ```text
//! sluice-dp-cache v1 len=<body bytes> sha256=<64 hex of the body>\n
//! <body: a `reconfigure` frame, i.e. gzip(JSON {type, version, config_hash, snapshot})>
//! ```
//!
//! The body is byte for byte the frame the control plane sent, so the data plane writes what it
//! received without re-encoding it. The file is replaced atomically (temp file in the same
//! directory, fsync, rename, fsync of the directory): a crash leaves the old cache or the new
//! one, never a mix. The checksum catches what atomicity cannot (a disk or a copy gone bad),
//! and a corrupt cache is reported and ignored rather than half-loaded.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_model::Snapshot;

use crate::message::{decode, encode_reconfigure, sha256_hex, Message};
use crate::{CacheError, ClusterError};

const MAGIC: &str = "sluice-dp-cache";
const FORMAT: &str = "v1";
/// The header is about 110 bytes; anything without a newline by then is not ours.
const MAX_HEADER_BYTES: usize = 256;

/// Writes `snapshot` as the cache at `path`, atomically. Creates the directory if needed. The
/// file is private (mode 0600): plugin configs may hold credentials.
pub fn write_cache(
    path: &Path,
    snapshot: &Snapshot,
    config_hash: &str,
) -> Result<(), ClusterError> {
    let body = encode_reconfigure(snapshot, config_hash)?;
    write_cache_frame(path, &body)
}

/// Reads the cache at `path`: `Ok(None)` when there is none, [`CacheError::Corrupt`] (inside
/// [`ClusterError::Cache`]) when it is truncated, altered or not a cache file.
pub fn load_cache(path: &Path) -> Result<Option<(Snapshot, String)>, ClusterError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ClusterError::io(
                format!("reading config cache {}", path.display()),
                error,
            ))
        }
    };
    let (snapshot, config_hash) = parse(&bytes).map_err(|reason| {
        ClusterError::Cache(CacheError::Corrupt(format!("{}: {reason}", path.display())))
    })?;
    Ok(Some((snapshot, config_hash)))
}

/// Writes an already encoded `reconfigure` frame as the cache body.
pub(crate) fn write_cache_frame(path: &Path, body: &[u8]) -> Result<(), ClusterError> {
    let file_name = path.file_name().ok_or_else(|| {
        ClusterError::io(
            format!("config cache path {} has no file name", path.display()),
            io::Error::from(io::ErrorKind::InvalidInput),
        )
    })?;
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(directory).map_err(|error| {
        ClusterError::io(format!("creating directory {}", directory.display()), error)
    })?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let temp = directory.join(format!(
        ".{}.{}.{nanos}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let header = format!(
        "{MAGIC} {FORMAT} len={} sha256={}\n",
        body.len(),
        sha256_hex(body)
    );
    let result = write_replace(&temp, path, directory, header.as_bytes(), body);
    if result.is_err() {
        // Best effort: after a successful rename there is no temp file left to remove.
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|error| {
        ClusterError::io(format!("writing config cache {}", path.display()), error)
    })
}

fn write_replace(
    temp: &Path,
    path: &Path,
    directory: &Path,
    header: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temp)?;
    file.write_all(header)?;
    file.write_all(body)?;
    // Data on disk before the rename makes it visible; otherwise a crash could leave a renamed
    // but empty file.
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)?;
    // The rename itself is durable only once the directory entry is.
    File::open(directory)?.sync_all()
}

/// Checks the header and checksum, then decodes the body. The error is the reason, for
/// [`CacheError::Corrupt`].
fn parse(bytes: &[u8]) -> Result<(Snapshot, String), String> {
    let newline = bytes
        .iter()
        .take(MAX_HEADER_BYTES)
        .position(|&byte| byte == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "the header is not text")?;
    let body = &bytes[newline + 1..];
    let mut fields = header.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err("not a sluice data plane cache file".to_owned());
    }
    match fields.next() {
        Some(FORMAT) => {}
        other => {
            return Err(format!(
                "unsupported cache format {:?} (this build reads {FORMAT})",
                other.unwrap_or("")
            ))
        }
    }
    let length: usize = fields
        .next()
        .and_then(|field| field.strip_prefix("len="))
        .and_then(|length| length.parse().ok())
        .ok_or("the header has no valid len= field")?;
    let checksum = fields
        .next()
        .and_then(|field| field.strip_prefix("sha256="))
        .ok_or("the header has no sha256= field")?;
    if body.len() != length {
        return Err(format!(
            "truncated or padded: the header says {length} bytes, the file holds {}",
            body.len()
        ));
    }
    if sha256_hex(body) != checksum {
        return Err("checksum mismatch".to_owned());
    }
    match decode(body) {
        Ok(Message::Reconfigure {
            config_hash,
            snapshot,
            ..
        }) => Ok((snapshot, config_hash)),
        Ok(other) => Err(format!("holds a {} message, not a config", other.kind())),
        Err(error) => Err(error.to_string()),
    }
}
