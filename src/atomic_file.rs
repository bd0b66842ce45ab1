//! A new file that appears at its path only once complete (`Database::compact_to`'s
//! copy): written under a temporary name in the same directory, then renamed into place
//! without replacing anything. Dropped before that (an error or a panic on the way), it
//! removes the temporary file, so a failed copy leaves nothing at the path, where a half
//! written file would open as an empty database or not at all. A crash can still leave
//! the temporary file (`.<name>.<pid>-<n>.partial`, beside the path) for the user to
//! delete.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::error::Result;
use crate::path_error;

/// Numbers the temporary names a process makes, so that two copies never share one.
static PARTIALS: AtomicU64 = AtomicU64::new(0);

pub(crate) struct AtomicFile {
    temp: PathBuf,
    path: PathBuf,
    placed: bool,
}

impl AtomicFile {
    /// Creates the temporary file, read-write; refuses a `path` that exists already (as
    /// the rename would, at the end).
    pub(crate) fn create(path: &Path) -> Result<(AtomicFile, File)> {
        let creating = path_error::at("creating", path);
        if path.symlink_metadata().is_ok() {
            return Err(creating(io::ErrorKind::AlreadyExists.into()));
        }
        let Some(name) = path.file_name() else {
            return Err(creating(io::ErrorKind::InvalidInput.into()));
        };
        let n = PARTIALS.fetch_add(1, Ordering::Relaxed);
        let temp_name = format!(
            ".{}.{}-{n}.partial",
            name.to_string_lossy(),
            std::process::id()
        );
        let temp = path.with_file_name(temp_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(creating)?;
        let partial = AtomicFile {
            temp,
            path: path.to_path_buf(),
            placed: false,
        };
        Ok((partial, file))
    }

    /// The temporary file's path, to open it again (with `O_DIRECT`).
    pub(crate) fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Gives the finished file its name, unless something took that name meanwhile
    /// (`AlreadyExists`). The caller syncs the directory after.
    pub(crate) fn place(mut self) -> Result<()> {
        let renamed = match renameat_with(CWD, &self.temp, CWD, &self.path, RenameFlags::NOREPLACE)
        {
            // A file system without RENAME_NOREPLACE: a hard link refuses an existing
            // name as well; the temporary name goes once the link stands.
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                std::fs::hard_link(&self.temp, &self.path).map(|()| {
                    let _ = std::fs::remove_file(&self.temp);
                })
            }
            other => other.map_err(io::Error::from),
        };
        renamed.map_err(path_error::at("naming the finished copy", &self.path))?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
