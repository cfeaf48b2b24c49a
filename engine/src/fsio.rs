//! Durable renames: a file or folder is flushed to disk before it is renamed into place, and the
//! folder holding the new name is flushed after, so a power cut leaves either the old state or
//! the whole new one — never a name pointing at data still in the page cache.

use std::path::Path;

/// Flushes a folder's entry list (the names in it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Flushes every file directly in `dir`, then `dir` itself.
pub fn sync_folder(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Renames `from` (a file or a folder of files) to `to` durably: `from`'s contents are flushed
/// first and `to`'s parent folder after.
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        sync_folder(from)?;
    } else {
        std::fs::File::open(from)?.sync_all()?;
    }
    std::fs::rename(from, to)?;
    if let Some(parent) = to.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_folders_and_files_with_their_contents() {
        let root = tempfile::tempdir().unwrap();
        let from = root.path().join("a.partial");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join("x.bin"), b"abc").unwrap();
        let to = root.path().join("a");
        rename_durably(&from, &to).unwrap();
        assert_eq!(std::fs::read(to.join("x.bin")).unwrap(), b"abc");
        assert!(!from.exists());
        let file = root.path().join("f.partial");
        std::fs::write(&file, b"z").unwrap();
        rename_durably(&file, &root.path().join("f")).unwrap();
        assert_eq!(std::fs::read(root.path().join("f")).unwrap(), b"z");
    }
}
