//! The few file operations the client needs, behind a trait so unit tests can emulate the
//! kernel's side effects (attribute files appearing on mkdir, generation bumps on write)
//! in a plain temp directory. Production uses [`RealFs`] only.

use std::io;
use std::path::Path;

pub(crate) trait ConfigFs: Send + Sync {
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    /// mkdir: configfs populates the attribute files.
    fn create_entry(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    /// rmdir: configfs removes the item with its attributes.
    fn remove_entry(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    /// One write(2) per attribute store, as configfs expects.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        let written = file.write(data)?;
        if written != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", data.len()),
            ));
        }
        Ok(())
    }
}

pub(crate) struct RealFs;

impl ConfigFs for RealFs {}
