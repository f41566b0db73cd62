//! Process and secret-file hygiene: secret files are read bounded and
//! trimmed, with a warning when group or others can read them; the
//! long-running commands mark the process not dumpable (no core dumps, no
//! ptrace by other processes of the same user), so the tokens it handles
//! do not end up in a core file.

use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

/// Largest secret file read: a token is under 100 bytes, so anything much
/// bigger is the wrong file.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Why a secret file could not be used. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It could not be opened or read.
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        /// The option that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not what a secret file looks like.
    #[error("{flag} {path}: {why}")]
    Invalid {
        /// The option that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// The mode of `path` when it lets others read it, or its group when that
/// group is not this process's own (Unix only). A group-readable file of
/// the process's own group is how Kubernetes mounts secrets for a non-root
/// container (`fsGroup`, mode 0440): no one else can read it.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        let mode = meta.mode();
        let others = mode & 0o004 != 0;
        let group = mode & 0o040 != 0 && Some(meta.gid()) != own_gid();
        (others || group).then_some(mode & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The process's effective group id, where it can be told.
fn own_gid() -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        Some(rustix::process::getegid().as_raw())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The warning for a secret file group or others can read, if it is one.
pub fn exposure_warning(path: &Path, flag: &str) -> Option<String> {
    readable_by_others(path).map(|mode| {
        format!(
            "{flag} {} is readable by group or others (mode {mode:03o}); restrict it: chmod 600 {}",
            path.display(),
            path.display()
        )
    })
}

/// Reads a secret file named by `flag`: at most [`MAX_SECRET_FILE`]
/// bytes, UTF-8, surrounding whitespace trimmed (a file mounted from a
/// Kubernetes secret ends with a newline), not empty. Logs a warning when
/// group or others can read it. The buffers are zeroed when dropped.
pub fn read_secret_file(
    path: &Path,
    flag: &'static str,
) -> Result<Zeroizing<String>, SecretFileError> {
    let shown = path.display().to_string();
    let read_error = |source| SecretFileError::Read {
        flag,
        path: shown.clone(),
        source,
    };
    let invalid = |why| SecretFileError::Invalid {
        flag,
        path: shown.clone(),
        why,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(invalid("it is larger than 64 KiB; is it the right file?"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid("it is not UTF-8 text"))?;
    let secret = Zeroizing::new(text.trim().to_owned());
    if secret.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some(warning) = exposure_warning(path, flag) {
        tracing::warn!("{warning}");
    }
    Ok(secret)
}

/// Marks the process not dumpable (`PR_SET_DUMPABLE` 0): no core dump, and
/// no ptrace or `/proc/PID/mem` by other processes of the same user.
/// Undone by `--allow-core-dumps`.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

/// Whether the process is dumpable now (`None` where that cannot be told).
pub fn is_dumpable() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::dumpable_behavior()
            .ok()
            .map(|b| b != rustix::process::DumpableBehavior::NotDumpable)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn exposed_secret_files_are_named_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "fgpx_secret\n").unwrap();
        chmod(&path, 0o644);
        let warning = exposure_warning(&path, "--token-file").unwrap();
        assert!(
            warning.contains("mode 644") && warning.contains("chmod 600"),
            "{warning}"
        );
        assert!(!warning.contains("fgpx_secret"));
        chmod(&path, 0o600);
        assert_eq!(exposure_warning(&path, "--token-file"), None);
        assert_eq!(
            read_secret_file(&path, "--token-file").unwrap().as_str(),
            "fgpx_secret"
        );
    }

    /// Runs in a child process (the flag is per process): marks it not
    /// dumpable and checks the kernel says so.
    #[cfg(target_os = "linux")]
    #[test]
    fn forbidding_core_dumps_marks_the_process_not_dumpable() {
        const CHILD: &str = "FLUXGATE_TEST_DUMPABLE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            forbid_core_dumps().unwrap();
            assert_eq!(is_dumpable(), Some(false));
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "hardening::tests::forbidding_core_dumps_marks_the_process_not_dumpable",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran the check: {stdout}"
        );
    }

    #[test]
    fn bad_secret_files_are_refused_without_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = read_secret_file(&empty, "--x").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, "s".repeat(70_000)).unwrap();
        let e = read_secret_file(&big, "--x").unwrap_err().to_string();
        assert!(e.contains("64 KiB") && !e.contains("sss"), "{e}");
        let missing = read_secret_file(&dir.path().join("nope"), "--x").unwrap_err();
        assert!(missing.to_string().starts_with("cannot read --x"));
    }
}
