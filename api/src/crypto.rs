//! API keys (random, stored as SHA-256 hashes) and secrets at rest (AES-256-GCM, one random
//! nonce per secret, the credential id and field name as associated data).

use std::fs;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Environment variable that overrides the master key file (64 hex characters).
pub const MASTER_KEY_ENV: &str = "LUUMEN_API_MASTER_KEY";
/// The master key file inside the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

const NONCE_LEN: usize = 12;

/// A problem with keys or sealed secrets.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("a stored secret could not be decrypted (wrong master key or corrupted data)")]
    Decrypt,
}

/// Fills `buf` from the OS random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses lowercase or uppercase hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A new API key: `lmn_` and 64 hex characters (32 random bytes).
pub fn new_api_key() -> Result<Zeroizing<String>, CryptoError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    random_bytes(raw.as_mut())?;
    Ok(Zeroizing::new(format!("lmn_{}", hex(raw.as_ref()))))
}

/// The stored form of an API key.
pub fn hash_api_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// The AES-256-GCM master key.
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::MasterKey(format!(
                "must be 32 bytes (64 hex characters), got {} bytes",
                bytes.len()
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .map_err(|_| CryptoError::MasterKey("invalid length".into()))?;
        Ok(MasterKey { cipher })
    }

    /// Creates `DIR/master.key` (mode 0600, must not exist) with a new random key.
    pub fn create(data_dir: &Path) -> Result<Self, CryptoError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        random_bytes(raw.as_mut())?;
        let path = data_dir.join(MASTER_KEY_FILE);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .map_err(|e| CryptoError::MasterKey(format!("{}: {e}", path.display())))?;
        let text = Zeroizing::new(format!("{}\n", hex(raw.as_ref())));
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| CryptoError::MasterKey(format!("{}: {e}", path.display())))?;
        Self::from_bytes(raw.as_ref())
    }

    /// The key from `LUUMEN_API_MASTER_KEY`, else from `DIR/master.key`.
    pub fn load(data_dir: &Path) -> Result<Self, CryptoError> {
        let text = match std::env::var(MASTER_KEY_ENV) {
            Ok(value) => Zeroizing::new(value),
            Err(_) => {
                let path = data_dir.join(MASTER_KEY_FILE);
                Zeroizing::new(fs::read_to_string(&path).map_err(|e| {
                    CryptoError::MasterKey(format!(
                        "{}: {e} (set {MASTER_KEY_ENV} or run `luumen-api init`)",
                        path.display()
                    ))
                })?)
            }
        };
        let bytes =
            Zeroizing::new(unhex(&text).ok_or_else(|| CryptoError::MasterKey("not hex".into()))?);
        Self::from_bytes(&bytes)
    }

    /// Encrypts one secret: `nonce (12 bytes) || ciphertext+tag`. `context` (credential id and
    /// field) is bound as associated data so sealed values cannot be swapped between rows.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`MasterKey::seal`] produced; the plaintext is zeroized on drop.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Zeroizing<String>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let mut plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)?;
        let text = match String::from_utf8(std::mem::take(&mut plain)) {
            Ok(text) => Zeroizing::new(text),
            Err(e) => {
                let mut bytes = e.into_bytes();
                bytes.zeroize();
                return Err(CryptoError::Decrypt);
            }
        };
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_with_unique_nonces() {
        let key = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let a = key.seal(b"hunter2", "c1/password").unwrap();
        let b = key.seal(b"hunter2", "c1/password").unwrap();
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(key.open(&a, "c1/password").unwrap().as_str(), "hunter2");
        assert!(key.open(&a, "c2/password").is_err(), "context is bound");
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open(&a, "c1/password").is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            unhex(&hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn api_keys_are_random_and_hashed() {
        let a = new_api_key().unwrap();
        let b = new_api_key().unwrap();
        assert_ne!(*a, *b);
        assert_eq!(hash_api_key(&a).len(), 64);
        assert_ne!(hash_api_key(&a), *a);
    }
}
