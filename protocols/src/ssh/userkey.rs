//! The agent's own private key, decoded once and kept, signing in Rust.
//!
//! libssh2's `userauth_publickey_fromfile`/`_frommemory` decode the private key twice per
//! session (once to derive the public key, once to sign), each time through OpenSSL 3's
//! `PEM_read_bio_PrivateKey`, whose decoder set-up and provider locks cost ≈ 1.7–2 ms of CPU per
//! host under 256 threads (bench/results.md) — 40 % of what the agent spends on a host; for an
//! encrypted key each decode also runs bcrypt-pbkdf. Here the key is decoded once per key file
//! version (path, inode, size and mtime; a rotated file is read again) or key text and cached:
//! - ed25519 and ECDSA keys in OpenSSH format sign the authentication request in Rust
//!   (`ssh-key`) through libssh2's callback API `libssh2_userauth_publickey`: no OpenSSL at all;
//! - other keys (RSA, PEM formats) still sign in libssh2, from the cached text and, when known,
//!   with the public key given, which saves one of the two decodes.
//!
//! Decrypted keys stay in memory for the life of the process (zeroized on drop), as the
//! passphrase and the key text already do in the host list.

use std::ffi::{c_char, c_int, c_uchar, c_void, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use signature::Signer;
use ssh2::Session;

/// Most distinct keys kept; the cache is emptied when it would grow beyond (never in practice:
/// one agent uses a handful of keys).
const CACHE_LIMIT: usize = 64;

/// A decoded user key.
pub(crate) struct UserKey {
    /// The key as libssh2 can use it.
    pub(crate) form: KeyForm,
}

/// How the key is used.
pub(crate) enum KeyForm {
    /// Signed in Rust: the public key blob (SSH wire encoding) and the decrypted private key.
    Signer {
        public_blob: Vec<u8>,
        private: Box<ssh_key::PrivateKey>,
    },
    /// Signed by libssh2 from the key text, with the public key line when it could be derived.
    Libssh2 {
        text: SecretString,
        public_openssh: Option<String>,
        /// `text` is the decrypted key: no passphrase goes with it.
        decrypted: bool,
    },
    /// An encrypted key that the passphrase (or its absence) does not open.
    Rejected,
}

/// Which key version an entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    File {
        path: PathBuf,
        device: u64,
        inode: u64,
        size: u64,
        mtime: (i64, i64),
    },
    /// SHA-256 of the key text (the text itself is not kept for signer keys).
    Text([u8; 32]),
}

struct Entry {
    source: Source,
    passphrase: Option<SecretString>,
    key: Arc<UserKey>,
}

static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn same_passphrase(a: Option<&SecretString>, b: Option<&SecretString>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        _ => false,
    }
}

fn cached(
    source: &Source,
    passphrase: Option<&SecretString>,
    decode: impl FnOnce() -> UserKey,
) -> Arc<UserKey> {
    {
        let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = cache
            .iter()
            .find(|e| &e.source == source && same_passphrase(e.passphrase.as_ref(), passphrase))
        {
            return entry.key.clone();
        }
    }
    // Decoded outside the lock (an encrypted key's KDF takes a while); two threads may both
    // decode the same new key once, the second insert is then dropped.
    let key = Arc::new(decode());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(entry) = cache
        .iter()
        .find(|e| &e.source == source && same_passphrase(e.passphrase.as_ref(), passphrase))
    {
        return entry.key.clone();
    }
    // An older version of the same file is gone for good.
    if let Source::File { path, .. } = source {
        cache.retain(|e| !matches!(&e.source, Source::File { path: p, .. } if p == path));
    }
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.push(Entry {
        source: source.clone(),
        passphrase: passphrase.cloned(),
        key: key.clone(),
    });
    key
}

/// The key in the file at `path`, decoded at most once per file version.
pub(crate) fn from_file(
    path: &Path,
    passphrase: Option<&SecretString>,
) -> Result<Arc<UserKey>, String> {
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let source = Source::File {
        path: path.to_owned(),
        device: metadata.dev(),
        inode: metadata.ino(),
        size: metadata.size(),
        mtime: (metadata.mtime(), metadata.mtime_nsec()),
    };
    {
        let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = cache
            .iter()
            .find(|e| e.source == source && same_passphrase(e.passphrase.as_ref(), passphrase))
        {
            return Ok(entry.key.clone());
        }
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not a text key file".to_owned())?;
    Ok(cached(&source, passphrase, || {
        decode(SecretString::from(text), passphrase)
    }))
}

/// The key in `text`, decoded at most once per distinct text.
pub(crate) fn from_text(text: &SecretString, passphrase: Option<&SecretString>) -> Arc<UserKey> {
    let digest: [u8; 32] = Sha256::digest(text.expose_secret().as_bytes()).into();
    cached(&Source::Text(digest), passphrase, || {
        decode(text.clone(), passphrase)
    })
}

/// Decodes an OpenSSH-format key with `ssh-key` (decrypting it once); anything it cannot sign
/// with goes to libssh2.
fn decode(text: SecretString, passphrase: Option<&SecretString>) -> UserKey {
    let Ok(parsed) = ssh_key::PrivateKey::from_openssh(text.expose_secret()) else {
        // PEM (PKCS#1, PKCS#8, SEC1) keys: libssh2 reads them, with the passphrase.
        return UserKey {
            form: KeyForm::Libssh2 {
                text,
                public_openssh: None,
                decrypted: false,
            },
        };
    };
    let key = if parsed.is_encrypted() {
        match passphrase.and_then(|p| parsed.decrypt(p.expose_secret().as_bytes()).ok()) {
            Some(key) => key,
            None => {
                return UserKey {
                    form: KeyForm::Rejected,
                }
            }
        }
    } else {
        parsed
    };
    let signs_here = matches!(
        key.algorithm(),
        ssh_key::Algorithm::Ed25519 | ssh_key::Algorithm::Ecdsa { .. }
    );
    if signs_here {
        if let Ok(public_blob) = key.public_key().to_bytes() {
            return UserKey {
                form: KeyForm::Signer {
                    public_blob,
                    private: Box::new(key),
                },
            };
        }
    }
    // RSA and DSA: libssh2 signs (it picks rsa-sha2-256/512 from the server's server-sig-algs,
    // which the callback cannot see), from the decrypted text, so it runs no KDF per host.
    let public_openssh = key.public_key().to_openssh().ok();
    let decrypted_text = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map(|t| SecretString::from(t.as_str()));
    match decrypted_text {
        Ok(text) => UserKey {
            form: KeyForm::Libssh2 {
                text,
                public_openssh,
                decrypted: true,
            },
        },
        Err(_) => UserKey {
            form: KeyForm::Libssh2 {
                text,
                public_openssh: None,
                decrypted: false,
            },
        },
    }
}

/// What the sign callback works with.
struct SignContext<'a> {
    private: &'a ssh_key::PrivateKey,
}

type SignCallback = unsafe extern "C" fn(
    session: *mut c_void,
    sig: *mut *mut c_uchar,
    sig_len: *mut usize,
    data: *const c_uchar,
    data_len: usize,
    abstract_: *mut *mut c_void,
) -> c_int;

extern "C" {
    /// libssh2's public-key authentication with a caller-supplied signature (libssh2.h); the
    /// symbol is in the libssh2 that `libssh2-sys` builds and links.
    fn libssh2_userauth_publickey(
        session: *mut c_void,
        username: *const c_char,
        pubkeydata: *const c_uchar,
        pubkeydata_len: usize,
        sign_callback: Option<SignCallback>,
        abstract_: *mut *mut c_void,
    ) -> c_int;
}

/// Signs libssh2's authentication request with the key in `*abstract_` (a [`SignContext`]).
/// Returns the raw signature blob (libssh2 adds the algorithm name) in memory from `malloc`,
/// which libssh2 frees with its default allocator (`free`; `ssh2::Session::new` installs no
/// other).
unsafe extern "C" fn sign(
    _session: *mut c_void,
    sig: *mut *mut c_uchar,
    sig_len: *mut usize,
    data: *const c_uchar,
    data_len: usize,
    abstract_: *mut *mut c_void,
) -> c_int {
    // No panic may cross the C frames.
    let outcome = std::panic::catch_unwind(|| {
        if abstract_.is_null() || data.is_null() || sig.is_null() || sig_len.is_null() {
            return -1;
        }
        // SAFETY: `authenticate` passes a pointer to a live SignContext that outlives the
        // libssh2 call, and libssh2 hands `data`/`data_len` as one buffer it owns.
        let (context, message) = unsafe {
            (
                &*((*abstract_) as *const SignContext<'_>),
                std::slice::from_raw_parts(data, data_len),
            )
        };
        let Ok(signature) = context.private.try_sign(message) else {
            return -1;
        };
        let bytes = signature.as_bytes();
        // SAFETY: a fresh allocation of bytes.len() bytes (at least 1), fully written before
        // libssh2 reads it; ownership passes to libssh2.
        unsafe {
            let out = libc::malloc(bytes.len().max(1)).cast::<c_uchar>();
            if out.is_null() {
                return -1;
            }
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len());
            *sig = out;
            *sig_len = bytes.len();
        }
        0
    });
    outcome.unwrap_or(-1)
}

/// Public-key authentication of `username` on `session` with a key that signs in Rust.
pub(crate) fn authenticate(
    session: &Session,
    username: &str,
    public_blob: &[u8],
    private: &ssh_key::PrivateKey,
) -> Result<(), ssh2::Error> {
    let username_c = CString::new(username).map_err(|_| {
        ssh2::Error::new(
            ssh2::ErrorCode::Session(-34), // LIBSSH2_ERROR_INVAL
            "user name contains a NUL byte",
        )
    })?;
    let context = SignContext { private };
    let mut abstract_ = &context as *const SignContext<'_> as *mut c_void;
    let rc = {
        let mut raw = session.raw();
        let raw_ptr = (&mut *raw) as *mut _ as *mut c_void;
        // SAFETY: `raw_ptr` is the live session, held locked by `raw` for the call; the name,
        // the key blob and `context` outlive the call; the callback matches
        // LIBSSH2_USERAUTH_PUBLICKEY_SIGN_FUNC.
        unsafe {
            libssh2_userauth_publickey(
                raw_ptr,
                username_c.as_ptr(),
                public_blob.as_ptr(),
                public_blob.len(),
                Some(sign),
                &mut abstract_,
            )
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(ssh2::Error::from_session_error(session, rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A fresh key from `ssh-keygen -t <kind>` (plus extra flags) in `dir`.
    fn keygen(dir: &Path, name: &str, args: &[&str], passphrase: &str) -> PathBuf {
        let path = dir.join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-C", name, "-N", passphrase, "-f"])
            .arg(&path)
            .args(args)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success(), "ssh-keygen {args:?}");
        path
    }

    fn public_blob_of(path: &Path) -> Vec<u8> {
        let line = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
        ssh_key::PublicKey::from_openssh(line.trim())
            .expect("public key parses")
            .to_bytes()
            .expect("encodes")
    }

    #[test]
    fn ed25519_and_ecdsa_keys_sign_here_and_their_signatures_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pass = SecretString::from("pass phrase");
        for (name, args, passphrase) in [
            ("ed", &["-t", "ed25519"][..], ""),
            ("ed_enc", &["-t", "ed25519"][..], "pass phrase"),
            ("p256", &["-t", "ecdsa", "-b", "256"][..], ""),
            ("p384", &["-t", "ecdsa", "-b", "384"][..], ""),
            ("p521", &["-t", "ecdsa", "-b", "521"][..], "pass phrase"),
        ] {
            let path = keygen(dir.path(), name, args, passphrase);
            let given = (!passphrase.is_empty()).then_some(&pass);
            let key = from_file(&path, given).expect("readable");
            let KeyForm::Signer {
                public_blob,
                private,
            } = &key.form
            else {
                panic!("{name}: expected a Rust signer");
            };
            assert_eq!(public_blob, &public_blob_of(&path), "{name}");
            let message = b"session id and userauth request";
            let signature: ssh_key::Signature = private.try_sign(message).expect("signs");
            let public = ssh_key::PublicKey::from_openssh(
                std::fs::read_to_string(path.with_extension("pub"))
                    .expect("pub")
                    .trim(),
            )
            .expect("parses");
            signature::Verifier::verify(public.key_data(), message, &signature)
                .unwrap_or_else(|e| panic!("{name}: signature does not verify: {e}"));
            assert!(
                signature::Verifier::verify(public.key_data(), b"another", &signature).is_err(),
                "{name}: a signature must not verify another message"
            );
        }
    }

    #[test]
    fn rsa_and_pem_keys_go_to_libssh2_and_wrong_passphrases_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pass = SecretString::from("pw");
        let wrong = SecretString::from("not it");

        let rsa = keygen(dir.path(), "rsa_enc", &["-t", "rsa", "-b", "2048"], "pw");
        let key = from_file(&rsa, Some(&pass)).expect("readable");
        let KeyForm::Libssh2 {
            text,
            public_openssh,
            decrypted,
        } = &key.form
        else {
            panic!("RSA: expected libssh2");
        };
        assert!(
            *decrypted,
            "RSA: decrypted once here, not per host by libssh2"
        );
        assert!(!ssh_key::PrivateKey::from_openssh(text.expose_secret())
            .expect("text parses")
            .is_encrypted());
        let line = std::fs::read_to_string(rsa.with_extension("pub")).expect("pub");
        let expected = line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let got = public_openssh.as_deref().expect("public key derived");
        assert_eq!(
            got.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
            expected
        );

        let pem = keygen(
            dir.path(),
            "pem",
            &["-t", "rsa", "-b", "2048", "-m", "PEM"],
            "",
        );
        let key = from_file(&pem, None).expect("readable");
        assert!(matches!(
            &key.form,
            KeyForm::Libssh2 {
                public_openssh: None,
                decrypted: false,
                ..
            }
        ));

        let ed = keygen(dir.path(), "ed_enc", &["-t", "ed25519"], "pw");
        assert!(matches!(
            from_file(&ed, Some(&wrong)).expect("readable").form,
            KeyForm::Rejected
        ));
        assert!(matches!(
            from_file(&ed, None).expect("readable").form,
            KeyForm::Rejected
        ));
        assert!(matches!(
            from_file(&rsa, Some(&wrong)).expect("readable").form,
            KeyForm::Rejected
        ));
        assert!(from_file(&dir.path().join("missing"), None).is_err());
    }

    #[test]
    fn a_key_is_decoded_once_per_file_version_and_passphrase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = keygen(dir.path(), "k", &["-t", "ed25519"], "");
        let first = from_file(&path, None).expect("readable");
        let again = from_file(&path, None).expect("readable");
        assert!(Arc::ptr_eq(&first, &again), "same file version: cached");

        // The operator rotates the key: the new file is read.
        std::fs::remove_file(&path).expect("rm");
        std::fs::remove_file(path.with_extension("pub")).expect("rm");
        let path = keygen(dir.path(), "k", &["-t", "ed25519"], "");
        let rotated = from_file(&path, None).expect("readable");
        assert!(!Arc::ptr_eq(&first, &rotated), "a new file version is read");
        let KeyForm::Signer { public_blob, .. } = &rotated.form else {
            panic!("expected a signer");
        };
        assert_eq!(public_blob, &public_blob_of(&path));

        let text = SecretString::from(std::fs::read_to_string(&path).expect("text"));
        let a = from_text(&text, None);
        let b = from_text(&text, None);
        assert!(Arc::ptr_eq(&a, &b), "same key text: cached");
    }
}
