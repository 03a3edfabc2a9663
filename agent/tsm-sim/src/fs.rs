//! FUSE front end: presents [`TsmState`] at a mount point laid out like
//! `/sys/kernel/config/tsm` (`report/` with one directory per entry).
//!
//! configfs details kept: each open file reads one snapshot of the attribute, filled on the
//! first read (so offsets within one open are consistent); `inblob` writes are buffered per
//! open file and stored when the file is flushed (close), like configfs binary attributes;
//! text attributes are stored on every write(2). Everything is direct I/O with zero TTLs so
//! the kernel caches nothing.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, OpenAccMode, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};

use crate::tsm_state::{Attr, TsmState, INBLOB_MAX};

const ROOT_INO: u64 = 1;
const REPORT_INO: u64 = 2;
/// Entry `id` is inode `id << 4`; its attributes follow at `(id << 4) + 1 + index`.
const ENTRY_SHIFT: u32 = 4;
const TTL: Duration = Duration::ZERO;
/// configfs reports a page for every attribute.
const ATTR_SIZE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    Report,
    Entry(u64),
    Attr(u64, Attr),
}

fn node_of(ino: u64) -> Option<Node> {
    match ino {
        ROOT_INO => Some(Node::Root),
        REPORT_INO => Some(Node::Report),
        i if i >> ENTRY_SHIFT == 0 => None,
        i => {
            let id = i >> ENTRY_SHIFT;
            match (i & ((1 << ENTRY_SHIFT) - 1)) as usize {
                0 => Some(Node::Entry(id)),
                n => Attr::ALL.get(n - 1).map(|a| Node::Attr(id, *a)),
            }
        }
    }
}

fn entry_ino(id: u64) -> u64 {
    id << ENTRY_SHIFT
}

fn attr_ino(id: u64, attr: Attr) -> u64 {
    entry_ino(id) + 1 + attr.index() as u64
}

fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

/// Per-open-file state.
#[derive(Debug, Default)]
struct Handle {
    /// Read snapshot (filled on first read).
    snapshot: Option<Vec<u8>>,
    /// Pending inblob bytes and whether anything was written since the last store.
    pending: Vec<u8>,
    dirty: bool,
}

/// The mounted file system.
pub struct TsmFs {
    state: Arc<TsmState>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

impl std::fmt::Debug for TsmFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsmFs").field("state", &self.state).finish_non_exhaustive()
    }
}

impl TsmFs {
    pub fn new(state: Arc<TsmState>) -> Self {
        TsmFs {
            state,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            started: SystemTime::now(),
        }
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file_attr(&self, ino: u64, node: Node) -> FileAttr {
        let (kind, perm, nlink, size) = match node {
            Node::Root | Node::Report | Node::Entry(_) => (FileType::Directory, 0o755, 2, 0),
            Node::Attr(_, a) => (FileType::RegularFile, a.mode(), 1, ATTR_SIZE),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Resolves an inode to a node that still exists.
    fn live(&self, ino: u64) -> Option<Node> {
        let node = node_of(ino)?;
        match node {
            Node::Entry(id) | Node::Attr(id, _) => {
                self.state.name_of(id)?;
                if let Node::Attr(_, a) = node {
                    if !self.state.attrs().contains(&a) {
                        return None;
                    }
                }
                Some(node)
            }
            _ => Some(node),
        }
    }

    fn store_inblob(&self, id: u64, fh: u64) -> Result<(), nix::errno::Errno> {
        let pending = {
            let mut handles = self.handles();
            match handles.get_mut(&fh) {
                Some(h) if h.dirty => {
                    h.dirty = false;
                    std::mem::take(&mut h.pending)
                }
                _ => return Ok(()),
            }
        };
        self.state.write_inblob(id, &pending)
    }
}

impl Filesystem for TsmFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_string_lossy();
        let found = match self.live(parent.0) {
            Some(Node::Root) if name == "report" => Some((REPORT_INO, Node::Report)),
            Some(Node::Report) => self.state.lookup(&name).map(|id| (entry_ino(id), Node::Entry(id))),
            Some(Node::Entry(id)) => {
                self.state.attrs().into_iter().find(|a| a.name() == name).map(|a| (attr_ino(id, a), Node::Attr(id, a)))
            }
            _ => None,
        };
        match found {
            Some((ino, node)) => reply.entry(&TTL, &self.file_attr(ino, node), fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live(ino.0) {
            Some(node) => reply.attr(&TTL, &self.file_attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // configfs ignores truncation (shell `>` redirections open with O_TRUNC).
        match self.live(ino.0) {
            Some(node) => reply.attr(&TTL, &self.file_attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        if self.live(parent.0) != Some(Node::Report) {
            return reply.error(Errno::EPERM);
        }
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        match self.state.mkdir(name) {
            Ok(id) => reply.entry(&TTL, &self.file_attr(entry_ino(id), Node::Entry(id)), fuser::Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.live(parent.0) != Some(Node::Report) {
            return reply.error(Errno::EPERM);
        }
        match self.state.rmdir(&name.to_string_lossy()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    // configfs has no extended attributes; ENOSYS makes the kernel stop asking.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(Node::Attr(_, attr)) = self.live(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mode = attr.mode();
        let wants_read = matches!(flags.acc_mode(), OpenAccMode::O_RDONLY | OpenAccMode::O_RDWR);
        let wants_write = matches!(flags.acc_mode(), OpenAccMode::O_WRONLY | OpenAccMode::O_RDWR);
        // configfs refuses these even to root.
        if (wants_read && mode & 0o444 == 0) || (wants_write && mode & 0o222 == 0) {
            return reply.error(Errno::EACCES);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(fh, Handle::default());
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(Node::Attr(id, attr)) = self.live(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let cached = self.handles().get(&fh.0).and_then(|h| h.snapshot.clone());
        let data = match cached {
            Some(d) => d,
            None => match self.state.read(id, attr) {
                Ok(d) => {
                    if let Some(h) = self.handles().get_mut(&fh.0) {
                        h.snapshot = Some(d.clone());
                    }
                    d
                }
                Err(e) => return reply.error(errno(e)),
            },
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        reply.data(&data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(Node::Attr(id, attr)) = self.live(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let len = data.len() as u32;
        match attr {
            Attr::Inblob => {
                let end = usize::try_from(offset).ok().and_then(|o| o.checked_add(data.len()));
                let Some(end) = end.filter(|e| *e <= INBLOB_MAX) else {
                    // configfs_bin_write_iter: past cb_max_size.
                    return reply.error(Errno::EFBIG);
                };
                let mut handles = self.handles();
                let Some(h) = handles.get_mut(&fh.0) else {
                    return reply.error(Errno::EBADF);
                };
                if h.pending.len() < end {
                    h.pending.resize(end, 0);
                }
                h.pending[end - data.len()..end].copy_from_slice(data);
                h.dirty = true;
                reply.written(len);
            }
            Attr::Privlevel => match self.state.write_privlevel(id, data) {
                Ok(()) => reply.written(len),
                Err(e) => reply.error(errno(e)),
            },
            _ => reply.error(Errno::EACCES),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2) waits for FLUSH, so a reader right after close sees the new generation.
        // configfs ignores the store's result at release, so errors are logged, not returned.
        if let Some(Node::Attr(id, Attr::Inblob)) = self.live(ino.0) {
            if let Err(e) = self.store_inblob(id, fh.0) {
                tracing::warn!(entry = id, error = %e, "inblob store rejected (ignored, as configfs does)");
            }
        }
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(Node::Attr(id, Attr::Inblob)) = self.live(ino.0) {
            if let Err(e) = self.store_inblob(id, fh.0) {
                tracing::warn!(entry = id, error = %e, "inblob store rejected (ignored, as configfs does)");
            }
        }
        self.handles().remove(&fh.0);
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(node) = self.live(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut list: Vec<(u64, FileType, String)> =
            vec![(ino.0, FileType::Directory, ".".into()), (ROOT_INO, FileType::Directory, "..".into())];
        match node {
            Node::Root => list.push((REPORT_INO, FileType::Directory, "report".into())),
            Node::Report => {
                list[1].0 = ROOT_INO;
                for (name, id) in self.state.list() {
                    list.push((entry_ino(id), FileType::Directory, name));
                }
            }
            Node::Entry(id) => {
                list[1].0 = REPORT_INO;
                for a in self.state.attrs() {
                    list.push((attr_ino(id, a), FileType::RegularFile, a.name().into()));
                }
            }
            Node::Attr(..) => return reply.error(Errno::ENOTDIR),
        }
        for (i, (ino, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_layout_round_trips() {
        assert_eq!(node_of(1), Some(Node::Root));
        assert_eq!(node_of(2), Some(Node::Report));
        assert_eq!(node_of(3), None);
        assert_eq!(node_of(entry_ino(5)), Some(Node::Entry(5)));
        for a in Attr::ALL {
            assert_eq!(node_of(attr_ino(9, a)), Some(Node::Attr(9, a)));
        }
        assert_eq!(node_of(entry_ino(1) + 15), None);
    }
}
