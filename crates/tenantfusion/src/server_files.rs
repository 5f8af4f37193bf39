//! Server files: the directories administrators may read (`CREATE EXTERNAL
//! TABLE`) and write (`COPY ... TO`, `INSERT` into an external table) on the
//! engine's machine.
//!
//! PostgreSQL keeps server file access to superusers and the
//! `pg_read_server_files` / `pg_write_server_files` roles; here it is roles
//! `dba` and `system`, and only inside the directories the engine was
//! configured with ([`EngineConfig::server_files`](crate::EngineConfig)).
//! None are configured by default, so no statement touches server files.
//!
//! A location is judged by the file it really is: `..` is taken away by the
//! letters, as DataFusion does when it makes a URL of it, then the deepest
//! part that exists is resolved by the file system (symbolic links
//! included); a glob may not climb out of the directory before it. A link created
//! inside a configured directory after the check is the operator's
//! business, as is any file placed there: whoever may write those
//! directories decides what the tables read.

use std::path::{Component, Path, PathBuf};

use tenantfusion_core::{Result, TenantError};

/// The configured directories, resolved once.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerFiles {
    dirs: Vec<PathBuf>,
    /// The engine's own storage directory, never a server file even inside
    /// one of `dirs`: a `COPY` there would overwrite its logs.
    reserved: Option<PathBuf>,
}

impl ServerFiles {
    /// The directories of `config`, each resolved; one that does not exist
    /// is a configuration error.
    pub(crate) fn new(dirs: &[PathBuf], storage: Option<&Path>) -> Result<Self> {
        let reserved = match storage {
            // Made by the storage root before this runs.
            Some(dir) => Some(dir.canonicalize().map_err(|e| TenantError::InvalidConfig {
                key: "storage".into(),
                message: format!("{}: {e}", dir.display()),
            })?),
            None => None,
        };
        let dirs = dirs
            .iter()
            .map(|dir| {
                dir.canonicalize().map_err(|e| TenantError::InvalidConfig {
                    key: "server_files".into(),
                    message: format!("{}: {e}", dir.display()),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { dirs, reserved })
    }

    /// The local path `location` (a path, or a `file://` URL, possibly
    /// ending in a glob) names, if it lies inside a configured directory.
    /// `what` names the statement for the error.
    pub(crate) fn confine(&self, location: &str, what: &str) -> Result<PathBuf> {
        if self.dirs.is_empty() {
            return Err(TenantError::PermissionDenied(format!(
                "{what} reads or writes server files, and this engine allows none \
                 (EngineConfig::server_files is empty)"
            )));
        }
        let path = local_path(location, what)?;
        let resolved = resolve(&path).map_err(|why| {
            TenantError::PermissionDenied(format!("{what}: location '{location}' {why}"))
        })?;
        if self
            .reserved
            .as_ref()
            .is_some_and(|storage| resolved.starts_with(storage))
        {
            return Err(TenantError::PermissionDenied(format!(
                "{what}: location '{location}' is inside the engine's own storage directory"
            )));
        }
        if self.dirs.iter().any(|dir| resolved.starts_with(dir)) {
            Ok(resolved)
        } else {
            Err(TenantError::PermissionDenied(format!(
                "{what}: location '{location}' is outside the server file directories"
            )))
        }
    }
}

/// The local path of a location; other object stores are not server files
/// and are not offered.
fn local_path(location: &str, what: &str) -> Result<PathBuf> {
    let path = match location.split_once("://") {
        None => location,
        Some(("file", rest)) => rest,
        Some((scheme, _)) => {
            return Err(TenantError::NotSupported(format!(
                "{what}: location '{location}': only local files are offered, not {scheme}://"
            )));
        }
    };
    // The glob part of a location (`dir/*.csv`) is matched by DataFusion
    // inside the directory before it, so it may not climb out of it.
    let mut plain = PathBuf::new();
    let mut components = Path::new(path).components();
    for component in components.by_ref() {
        if component
            .as_os_str()
            .to_string_lossy()
            .contains(['*', '?', '['])
        {
            break;
        }
        plain.push(component);
    }
    if components.any(|c| c == Component::ParentDir) {
        return Err(TenantError::PermissionDenied(format!(
            "{what}: location '{location}' has '..' after a glob"
        )));
    }
    if plain.is_relative() {
        let cwd = std::env::current_dir().map_err(|e| {
            TenantError::Internal(format!("the working directory cannot be read: {e}"))
        })?;
        plain = cwd.join(plain);
    }
    // DataFusion makes a `file://` URL of the location, which takes `..`
    // away by the letters (`a/link/..` is `a`, wherever `link` points);
    // the file system then follows the links in what is left. Judge the
    // same path.
    let mut normal = PathBuf::new();
    for component in plain.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    Ok(normal)
}

/// `path` (absolute, without `.` or `..`) with its deepest existing
/// ancestor resolved by the file system and the rest appended.
fn resolve(path: &Path) -> std::result::Result<PathBuf, String> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(mut resolved) = existing.canonicalize() {
            for part in rest.iter().rev() {
                resolved.push(part);
            }
            return Ok(resolved);
        }
        rest.push(existing.file_name().ok_or("has no existing directory")?);
        existing = existing.parent().ok_or("has no existing directory")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, ServerFiles) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("allowed")).unwrap();
        std::fs::create_dir(dir.path().join("secret")).unwrap();
        std::fs::write(dir.path().join("secret/key"), "k").unwrap();
        std::fs::create_dir(dir.path().join("allowed/storage")).unwrap();
        let storage = dir.path().join("allowed/storage");
        let files = ServerFiles::new(&[dir.path().join("allowed")], Some(&storage)).unwrap();
        (dir, files)
    }

    #[test]
    fn paths_inside_are_allowed_whether_they_exist_or_not() {
        let (dir, files) = setup();
        let root = dir.path().canonicalize().unwrap();
        let inside = |p: &str| files.confine(&format!("{}/{p}", dir.path().display()), "COPY");
        assert_eq!(inside("allowed/a.csv").unwrap(), root.join("allowed/a.csv"));
        assert_eq!(
            inside("allowed/new/dir/").unwrap(),
            root.join("allowed/new/dir")
        );
        assert_eq!(inside("allowed/*.parquet").unwrap(), root.join("allowed"));
        let url = format!("file://{}/allowed/x", dir.path().display());
        assert!(files.confine(&url, "COPY").is_ok());
    }

    #[test]
    fn climbing_out_linking_out_and_other_stores_are_refused() {
        let (dir, files) = setup();
        let d = dir.path().display();
        for location in [
            format!("{d}/allowed/../secret/key"),
            format!("{d}/allowed/missing/../../secret/key"),
            format!("{d}/secret/key"),
            "/etc/passwd".to_string(),
            format!("{d}/allowed/*/../../secret"),
        ] {
            let err = files
                .confine(&location, "CREATE EXTERNAL TABLE")
                .unwrap_err();
            assert_eq!(err.code(), "PERMISSION_DENIED", "{location}: {err}");
        }
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("allowed/link"))
            .unwrap();
        let err = files
            .confine(&format!("{d}/allowed/link/key"), "COPY")
            .unwrap_err();
        assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
        // `allowed/deep/../..` is `allowed/x/y/../..` (inside) to the file
        // system and the parent of `allowed` (outside) to DataFusion's URL.
        std::fs::create_dir_all(dir.path().join("allowed/x/y")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("allowed/x/y"),
            dir.path().join("allowed/deep"),
        )
        .unwrap();
        let err = files
            .confine(&format!("{d}/allowed/deep/../../secret"), "COPY")
            .unwrap_err();
        assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
        let relative = files.confine("../../nowhere", "COPY").unwrap_err();
        assert_eq!(relative.code(), "PERMISSION_DENIED", "{relative}");
        let err = files
            .confine(&format!("{d}/allowed/storage/catalog/x"), "COPY")
            .unwrap_err();
        assert!(err.to_string().contains("own storage"), "{err}");
        let err = files.confine("s3://bucket/x", "COPY").unwrap_err();
        assert_eq!(err.code(), "NOT_SUPPORTED", "{err}");
    }

    #[test]
    fn a_directory_that_does_not_exist_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ServerFiles::new(&[dir.path().join("missing")], None).unwrap_err();
        assert_eq!(err.code(), "INVALID_CONFIG", "{err}");
        assert!(err.to_string().contains("server_files"), "{err}");
    }

    #[test]
    fn huge_and_odd_locations_get_an_answer_not_a_panic() {
        let (dir, files) = setup();
        let d = dir.path().display();
        let long = format!("{d}/allowed/{}", "x/".repeat(100_000));
        assert!(files.confine(&long, "COPY").is_ok());
        let long_name = format!("{d}/allowed/{}", "y".repeat(1_000_000));
        assert!(files.confine(&long_name, "COPY").is_ok());
        for odd in ["", "file://", "://", "\u{0}", "*", "?[", "file://*/../x"] {
            let _ = files.confine(odd, "COPY");
        }
        assert!(files.confine("file://*/../x", "COPY").is_err());
    }

    #[test]
    fn none_configured_refuses_everything() {
        let err = ServerFiles::default()
            .confine("/tmp/x", "COPY")
            .unwrap_err();
        assert_eq!(err.code(), "PERMISSION_DENIED");
        assert!(err.to_string().contains("server_files"), "{err}");
    }
}
