//! The OS keyring entry holding the management token of one token service:
//! service `fluxgate`, user = the token service URL.
//!
//! On Linux the `keyring` crate keeps entries in the kernel's keyutils
//! session keyring and links them into the user's persistent keyring, so
//! they outlive a logout. That needs a session keyring of the process's own
//! (a login through `pam_keyinit`). Without one (containers, `su`, CI), the
//! user-session keyring stands in, and asking for the persistent keyring
//! makes the kernel attach a new, empty session keyring to the process,
//! which from then on can no longer reach the keys stored before: every
//! read fails. In that case entries go to the user-session keyring alone,
//! never touching the persistent one: they last while the user has any
//! process running, and until reboot at most.

use keyring::{Entry, Error};

/// The keyring entry's service name.
pub const SERVICE: &str = "fluxgate";

/// The token stored for `user`, `Ok(None)` when there is none.
pub fn get(user: &str) -> Result<Option<String>, Error> {
    match entry(user)?.get_password() {
        Ok(secret) => Ok(Some(secret)),
        Err(Error::NoEntry) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Stores `secret` for `user`.
pub fn set(user: &str, secret: &str) -> Result<(), Error> {
    entry(user)?.set_password(secret)
}

/// Deletes the entry for `user`; `Ok(false)` when there was none.
pub fn delete(user: &str) -> Result<bool, Error> {
    match entry(user)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(Error::NoEntry) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether entries here are forgotten at reboot (Linux keyutils) or kept.
pub fn forgets_on_reboot() -> bool {
    !matches!(
        keyring::default::default_credential_builder().persistence(),
        keyring::credential::CredentialPersistence::UntilDelete
    )
}

/// A keyring error as text, without any stored bytes (`BadEncoding` holds
/// the undecodable secret itself).
pub fn describe(e: &Error) -> String {
    match e {
        Error::PlatformFailure(inner) | Error::NoStorageAccess(inner) => inner.to_string(),
        Error::BadEncoding(_) => "the stored token is not UTF-8".to_owned(),
        Error::NoEntry => "no entry".to_owned(),
        Error::TooLong(what, limit) => format!("{what} is longer than {limit}"),
        Error::Invalid(what, why) => format!("{what} is invalid: {why}"),
        Error::Ambiguous(_) => "more than one matching entry".to_owned(),
        _ => "unexpected keyring error".to_owned(),
    }
}

#[cfg(target_os = "linux")]
fn entry(user: &str) -> Result<Entry, Error> {
    use keyring::keyutils::{KeyutilsCredential, decode_error};
    use linux_keyutils::{KeyRing, KeyRingIdentifier};

    let session =
        KeyRing::from_special_id(KeyRingIdentifier::Session, false).map_err(decode_error)?;
    let user_session =
        KeyRing::from_special_id(KeyRingIdentifier::UserSession, false).map_err(decode_error)?;
    if session != user_session {
        // A real login session: the crate's own behaviour, persistent link included.
        return Entry::new(SERVICE, user);
    }
    let credential = KeyutilsCredential {
        session,
        persistent: None,
        // The crate's own naming, so either path finds the other's entries.
        description: format!("keyring-rs:{user}@{SERVICE}"),
    };
    Ok(Entry::new_with_credential(Box::new(credential)))
}

#[cfg(not(target_os = "linux"))]
fn entry(user: &str) -> Result<Entry, Error> {
    Entry::new(SERVICE, user)
}
