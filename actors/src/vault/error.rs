//! What can go wrong when talking to Vault. No variant ever holds a secret or a token: errors
//! name the KV path (and field), the auth method, or the Vault endpoint.

/// A Vault failure. [`VaultError::is_credential_error`] errors are permanent for the hosts that
/// use the reference (do not retry them this cycle); [`VaultError::is_retriable`] ones are
/// transient (network, 5xx, sealed server).
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A credential field starts with `vault:` but is not `vault:PATH#FIELD`.
    #[error("invalid Vault reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as written.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Vault answered 403 for a secret: the token's policy does not allow reading it (or the
    /// token is no longer valid).
    #[error(
        "Vault denied reading {mount}/{path} (403 permission denied): \
         check the policy of the agent's token"
    )]
    PermissionDenied {
        /// The KV v2 mount.
        mount: String,
        /// The secret's path under the mount.
        path: String,
    },
    /// Vault answered 404: no secret at that path (or it was deleted).
    #[error("no secret at {mount}/{path} in Vault (404 not found)")]
    NotFound {
        /// The KV v2 mount.
        mount: String,
        /// The secret's path under the mount.
        path: String,
    },
    /// The secret exists but has no such field, or the field is not a string.
    #[error("the Vault secret {mount}/{path} has no string field {field:?}")]
    MissingField {
        /// The KV v2 mount.
        mount: String,
        /// The secret's path under the mount.
        path: String,
        /// The missing field.
        field: String,
    },
    /// Logging in (AppRole) or validating the token failed.
    #[error("Vault {method} authentication failed: {reason}")]
    Auth {
        /// `token` or `approle`.
        method: &'static str,
        /// Why (Vault's status and message, never a secret).
        reason: String,
        /// Whether trying again later may help (network trouble, 5xx).
        retriable: bool,
    },
    /// The token expired and there is no way to get a new one (token auth).
    #[error("the Vault token has expired and cannot be renewed; provide a new token")]
    TokenExpired,
    /// Vault could not be reached, timed out, or answered something unexpected.
    #[error("Vault request to {endpoint} failed: {reason}")]
    Request {
        /// The API endpoint (path only, e.g. `/v1/secret/data/hosts/db1`).
        endpoint: String,
        /// What happened (no secret).
        reason: String,
        /// Whether trying again later may help.
        retriable: bool,
    },
    /// The client could not be set up (bad address, bad CA certificate, no auth configured).
    #[error("Vault setup: {0}")]
    Setup(String),
}

impl VaultError {
    /// Whether trying again (next cycle, or after a pause) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            VaultError::Auth { retriable, .. } | VaultError::Request { retriable, .. } => {
                *retriable
            }
            VaultError::InvalidReference { .. }
            | VaultError::PermissionDenied { .. }
            | VaultError::NotFound { .. }
            | VaultError::MissingField { .. }
            | VaultError::TokenExpired
            | VaultError::Setup(_) => false,
        }
    }

    /// Whether this is a problem with the credential reference itself (403, 404, missing field,
    /// malformed reference): a clear, non-retried credential error for the hosts using it.
    pub fn is_credential_error(&self) -> bool {
        matches!(
            self,
            VaultError::InvalidReference { .. }
                | VaultError::PermissionDenied { .. }
                | VaultError::NotFound { .. }
                | VaultError::MissingField { .. }
        )
    }
}
