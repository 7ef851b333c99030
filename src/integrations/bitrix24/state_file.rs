//! The small files the bot keeps in the state directory (the application token, the polling offset):
//! read when present, replaced atomically and readable by the owner only, so that a crash leaves the
//! old value or the new one and a token is not exposed to other local users.

use std::io::Write;
use std::path::Path;

use super::Bitrix24Error;

/// The file's trimmed contents; `None` when it is missing or empty.
pub fn read(path: &Path) -> Result<Option<String>, Bitrix24Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Bitrix24Error::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes `contents` to a temporary file (mode 600), syncs it and renames it over `path`.
pub fn replace(path: &Path, contents: &str) -> Result<(), Bitrix24Error> {
    let fail =
        |e: std::io::Error| Bitrix24Error::Storage(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            // Only when novapay creates it: an existing directory keeps the operator's mode.
            builder.mode(0o700);
        }
        builder.create(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(fail)?;
    f.write_all(contents.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
