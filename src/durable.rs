//! Durable directory entries: the one place that creates, renames and removes
//! files and directories whose existence anything depends on.
//!
//! Why: after a power cut a new, renamed or removed directory entry is only
//! guaranteed to be as it was made if its parent directory was fsynced after the
//! change (POSIX; ext4 usually keeps it anyway, other file systems and devices do
//! not). A node that loses `messages/` or a WAL segment's name after having
//! acknowledged what it held loses acknowledged writes. Every such change goes
//! through a function here, which fsyncs the parent before returning, so callers
//! need only order their own acknowledgements after the call.
//!
//! Invariants:
//! - when a function here returns `Ok`, the change it made to a directory entry
//!   (and, for [`create_dir_durable`], every ancestor it created) is durable;
//! - [`write_file_durable`] makes the file's content durable before its name
//!   appears, so the name never points at unsynced data;
//! - under `cfg(test)` every entry change and directory sync is recorded
//!   ([`record`]), so tests can check that each change was followed by a sync of
//!   its parent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The parent directory of `path` (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Fsyncs the directory `dir`, making the creations, renames and removals of its
/// entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    record::note(record::Event::SyncDir(dir.to_path_buf()));
    Ok(())
}

/// Creates `dir` and every missing ancestor, fsyncing the parent of each one it
/// created (deepest last). An existing directory is left as it is.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    for p in missing.into_iter().rev() {
        match fs::create_dir(&p) {
            Ok(()) => {}
            // Raced with another creator: it exists, but its entry may not be
            // durable yet, so the parent is synced all the same.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
            Err(e) => return Err(e),
        }
        record::note(record::Event::Entry(p.clone()));
        sync_dir(&parent(&p))?;
    }
    Ok(())
}

/// Opens `path` with `opts` (which must include `create` or `create_new`) and
/// makes its directory entry durable.
pub fn create_file_durable(path: &Path, opts: &OpenOptions) -> io::Result<File> {
    let file = opts.open(path)?;
    record::note(record::Event::Entry(path.to_path_buf()));
    sync_dir(&parent(path))?;
    Ok(file)
}

/// Renames `from` to `to` and fsyncs the parent of each (once when they share it).
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    record::note(record::Event::Entry(from.to_path_buf()));
    record::note(record::Event::Entry(to.to_path_buf()));
    let (pf, pt) = (parent(from), parent(to));
    sync_dir(&pt)?;
    if pf != pt {
        sync_dir(&pf)?;
    }
    Ok(())
}

/// Removes the file `path` and fsyncs its parent. A file already gone is not an
/// error (its parent is synced all the same: the removal may not be durable).
pub fn remove_durable(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    record::note(record::Event::Entry(path.to_path_buf()));
    sync_dir(&parent(path))
}

/// Discards the directory `dir` and everything in it: renamed aside durably
/// (`<dir>.discarded`), then deleted. A crash leaves either `dir` whole or
/// nothing under its name; a leftover `.discarded` is deleted at the next call.
pub fn discard_dir(dir: &Path) -> io::Result<()> {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".discarded");
    let aside = dir.with_file_name(name);
    match fs::remove_dir_all(&aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match fs::rename(dir, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    record::note(record::Event::Entry(dir.to_path_buf()));
    record::note(record::Event::Entry(aside.clone()));
    sync_dir(&parent(dir))?;
    fs::remove_dir_all(&aside)
}

/// Writes `data` to `path` atomically and durably: a temp file beside it,
/// written and fsynced, renamed over `path`, parent fsynced.
pub fn write_file_durable(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    rename_durable(&tmp, path)
}

/// The recording shim: under `cfg(test)` a global log of entry changes and
/// directory syncs; elsewhere nothing.
pub mod record {
    #[cfg(test)]
    use std::path::Path;
    use std::path::PathBuf;

    /// One change of a directory entry, or one directory fsync.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Event {
        /// `path`'s entry in its parent was created, renamed or removed.
        Entry(PathBuf),
        SyncDir(PathBuf),
    }

    #[cfg(test)]
    static LOG: std::sync::Mutex<Vec<Event>> = std::sync::Mutex::new(Vec::new());

    #[cfg(test)]
    pub(super) fn note(e: Event) {
        LOG.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    /// Records a change a test made itself (so the checker knows the entry).
    #[cfg(test)]
    pub fn note_test_entry(path: &Path) {
        note(Event::Entry(path.to_path_buf()));
        note(Event::SyncDir(super::parent(path)));
    }

    #[cfg(not(test))]
    #[inline(always)]
    pub(super) fn note(_: Event) {}

    /// The recorded events under `root` (tests run in parallel in one process,
    /// each in its own directory). Paths are compared after canonicalizing
    /// `root`'s own prefix, so `root` must exist.
    #[cfg(test)]
    pub fn events_under(root: &Path) -> Vec<Event> {
        let log = LOG.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|e| match e {
                Event::Entry(p) | Event::SyncDir(p) => p.starts_with(root),
            })
            .cloned()
            .collect()
    }

    /// Entry changes under `root` whose parent was not fsynced after them. Also
    /// checks the tree as it stands: every file and directory below `root` must
    /// have been made by a recorded change (not by a raw `std::fs` call).
    /// Returns a description of each fault; empty when everything is durable.
    #[cfg(test)]
    pub fn undurable_under(root: &Path) -> Vec<String> {
        let events = events_under(root);
        let mut faults = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let Event::Entry(p) = e {
                let dir = super::parent(p);
                let synced = events[i + 1..]
                    .iter()
                    .any(|later| *later == Event::SyncDir(dir.clone()));
                if !synced {
                    faults.push(format!("{}: parent not synced after it", p.display()));
                }
            }
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                if !events.contains(&Event::Entry(p.clone())) {
                    faults.push(format!("{}: made without the durable helper", p.display()));
                }
            }
        }
        faults
    }

    /// Panics listing every fault [`undurable_under`] finds, and when nothing
    /// was recorded at all (a test that checks nothing).
    #[cfg(test)]
    pub fn assert_durable(root: &Path) {
        assert!(
            !events_under(root).is_empty(),
            "nothing recorded under {}",
            root.display()
        );
        let faults = undurable_under(root);
        assert!(faults.is_empty(), "not durable:\n{}", faults.join("\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::record::{assert_durable, undurable_under};
    use super::*;

    #[test]
    fn each_helper_syncs_the_parent_of_what_it_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        create_dir_durable(&root.join("a/b")).unwrap();
        write_file_durable(&root.join("a/b/f"), b"x").unwrap();
        let opts = OpenOptions::new().write(true).create_new(true).clone();
        create_file_durable(&root.join("a/g"), &opts).unwrap();
        rename_durable(&root.join("a/g"), &root.join("a/b/h")).unwrap();
        remove_durable(&root.join("a/b/h")).unwrap();
        // `root` itself was made by us too: check from the temp dir.
        assert_durable(tmp.path());
        assert_eq!(fs::read(root.join("a/b/f")).unwrap(), b"x");
    }

    #[test]
    fn a_discarded_directory_is_gone_durably_and_a_leftover_is_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        create_dir_durable(&dir.join("inner")).unwrap();
        write_file_durable(&dir.join("inner/seg"), b"x").unwrap();
        // A leftover from a discard cut short by a crash.
        create_dir_durable(&tmp.path().join("wal.discarded")).unwrap();
        discard_dir(&dir).unwrap();
        assert!(!dir.exists() && !tmp.path().join("wal.discarded").exists());
        assert_durable(tmp.path());
        discard_dir(&dir).unwrap(); // nothing there: not an error
    }

    #[test]
    fn the_checker_sees_a_raw_creation_and_a_missing_sync() {
        let tmp = tempfile::tempdir().unwrap();
        create_dir_durable(&tmp.path().join("d")).unwrap();
        fs::write(tmp.path().join("d/raw"), b"x").unwrap();
        record::note(record::Event::Entry(tmp.path().join("d/unsynced")));
        let faults = undurable_under(tmp.path());
        assert_eq!(faults.len(), 2, "{faults:?}");
        assert!(faults.iter().any(|f| f.contains("raw: made without")));
        assert!(faults
            .iter()
            .any(|f| f.contains("unsynced: parent not synced")));
    }
}
