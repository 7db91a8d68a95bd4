//! Every file the CLI writes goes through here: created exclusively (an existing file or a link
//! planted at the name is never followed, opened or truncated), owner-only (0600 on Unix), and,
//! when it replaces a file, written under a random temporary name and renamed into place.
//!
//! Folders that receive deliveries are checked first ([`private_dir`]): a folder another user can
//! write to (or owns) could hold links planted to redirect what is saved there, or let them read
//! and replace saved deliveries.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The permission bits of a file holding deliveries, signatures or keys: owner read and write.
#[cfg(unix)]
const PRIVATE_FILE: u32 = 0o600;
/// The permission bits of a folder the CLI creates for such files: owner only.
#[cfg(unix)]
const PRIVATE_DIR: u32 = 0o700;

/// Makes sure `dir` is a folder only the current user can write to, creating it (0700, and any
/// missing parents) when it does not exist.
///
/// # Errors
///
/// One line saying what is wrong and how to fix it: not a folder, owned by another user, writable
/// by group or others (`chmod go-w DIR`), or cannot be created.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dir(dir)
                .map_err(|e| format!("cannot create the folder {}: {e}", dir.display()))?;
        }
        Err(e) => return Err(format!("cannot read the folder {}: {e}", dir.display())),
    }
    check_dir(dir)
}

#[cfg(unix)]
fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

#[cfg(not(unix))]
fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn check_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let shown = dir.display();
    let link = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read the folder {shown}: {e}"))?;
    if link.file_type().is_symlink() && link.uid() != me {
        return Err(format!(
            "refusing to save into {shown}: it is a link made by another user (uid {}); choose a \
             folder of your own",
            link.uid()
        ));
    }
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("cannot read the folder {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("refusing to save into {shown}: it is not a folder"));
    }
    if meta.uid() != me {
        return Err(format!(
            "refusing to save into {shown}: it belongs to another user (uid {}), who could plant \
             links there or read and replace what is saved; choose a folder of your own (a missing \
             one is created, open only to you)",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "refusing to save into {shown}: it is writable by other users (mode {mode:04o}), who \
             could plant links there or replace what is saved; run `chmod go-w {shown}` or choose \
             a folder of your own"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the folder {}: {e}", dir.display()))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "refusing to save into {}: it is not a folder",
            dir.display()
        ))
    }
}

/// Creates `path` for writing, owner-only, failing with [`io::ErrorKind::AlreadyExists`] when
/// anything (a file, a folder, a link, even a dangling one) is already there: nothing planted at
/// the name is ever followed or truncated.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE);
    }
    options.open(path)
}

/// Replaces (or creates) `path` with `bytes`: they are written to a temporary file with a random
/// name in the same folder, created exclusively and owner-only, then renamed over `path`, so a
/// reader never sees half a file and nothing planted at a predictable name is used. A link at
/// `path` itself is replaced, not followed.
///
/// # Errors
///
/// One line naming the file and what failed; the temporary file is removed.
pub fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    // tempfile creates it with O_EXCL and mode 0600, under a random name, and removes it when
    // dropped before being persisted.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .rand_bytes(12)
        .tempfile_in(&dir)
        .map_err(|e| fail(&e))?;
    temp.write_all(bytes).map_err(|e| fail(&e))?;
    temp.as_file().sync_all().map_err(|e| fail(&e))?;
    temp.persist(path).map_err(|e| fail(&e.error))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn create_private_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "mine").unwrap();
        let link = dir.path().join("link");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::write(&link, "x").unwrap();
        let error = create_private(&link).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
    }

    #[cfg(unix)]
    #[test]
    fn files_are_owner_only_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.pem");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(create_private(&dir.path().join("a")).unwrap());
        assert_eq!(mode(&dir.path().join("a")), 0o600);
        replace_private(&path, b"one").unwrap();
        replace_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(mode(&path), 0o600);
        // Nothing is left behind but the two files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
