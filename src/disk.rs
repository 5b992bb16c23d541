//! What the stores ask of the file system they live on: free space, whether
//! a path may be written, and how much a directory holds.

use std::path::Path;

/// Bytes available to this user on the file system holding `path`.
#[cfg(unix)]
pub fn free_bytes(path: &Path) -> Option<u64> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid C string and `stats` a plain struct statvfs fills.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    Some(stats.f_bavail as u64 * stats.f_frsize as u64)
}

#[cfg(not(unix))]
pub fn free_bytes(_: &Path) -> Option<u64> {
    None
}

/// Whether this process may write `path` (false on a read-only file system,
/// or without permission).
#[cfg(unix)]
pub fn writable(path: &Path) -> bool {
    let Some(c) = c_path(path) else { return true };
    // SAFETY: `c` is a valid C string; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
pub fn writable(path: &Path) -> bool {
    !std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly())
}

#[cfg(unix)]
fn c_path(path: &Path) -> Option<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(path.as_os_str().as_bytes()).ok()
}

/// Bytes the files under `dir` hold (allocated, not sparse length).
pub fn dir_size(dir: &Path) -> u64 {
    files(dir).map(|m| allocated(&m)).sum()
}

/// Bytes the files under `dir` span but have not allocated (their holes).
/// Mapped and read, a hole can need them: on tmpfs a read of a hole in a
/// shared mapping allocates a page, and where none is left the process dies
/// of SIGBUS instead of seeing an error.
pub fn holes(dir: &Path) -> u64 {
    files(dir).filter(|m| m.is_file()).map(|m| m.len().saturating_sub(allocated(&m))).sum()
}

fn files(dir: &Path) -> impl Iterator<Item = std::fs::Metadata> {
    walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter_map(|e| e.metadata().ok())
}

#[cfg(unix)]
fn allocated(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(m) * 512
}

#[cfg(not(unix))]
fn allocated(m: &std::fs::Metadata) -> u64 {
    m.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn holes_are_what_sparse_files_span_beyond_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dense"), vec![1u8; 64 << 10]).unwrap();
        assert!(super::holes(dir.path()) < 64 << 10, "a written file has (almost) no holes");
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let holes = super::holes(dir.path());
        assert!(((1 << 30) - (64 << 10)..=(1 << 30) + (64 << 10)).contains(&holes), "{holes}");
        assert!(super::dir_size(dir.path()) < 1 << 20);
    }
}
