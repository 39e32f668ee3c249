//! Replacing `vault:` references in [`Credentials`] with the values read from Vault.

use luumen_schemas::inventory::Credentials;
use secrecy::{ExposeSecret, SecretString};

use super::{VaultClient, VaultError, VaultRef};

/// Whether any credential field (username, password, private_key, passphrase) is a `vault:`
/// reference, i.e. whether this host needs Vault this cycle.
pub fn uses_vault(credentials: &Credentials) -> bool {
    VaultRef::is_reference(&credentials.username)
        || [
            &credentials.password,
            &credentials.private_key,
            &credentials.passphrase,
        ]
        .into_iter()
        .flatten()
        .any(|secret| VaultRef::is_reference(secret.expose_secret()))
}

/// The references in `credentials`, checked for syntax (no I/O): a malformed `vault:` value is an
/// error naming it.
pub fn references(credentials: &Credentials) -> Result<Vec<VaultRef>, VaultError> {
    let mut found = Vec::new();
    if let Some(r) = VaultRef::parse(&credentials.username)? {
        found.push(r);
    }
    for secret in [
        &credentials.password,
        &credentials.private_key,
        &credentials.passphrase,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(r) = VaultRef::parse(secret.expose_secret())? {
            found.push(r);
        }
    }
    Ok(found)
}

/// Replaces every `vault:PATH#FIELD` value in `credentials` (username, password, private_key,
/// passphrase) with the field read from Vault; other values are left alone. Call it on a copy of
/// the host's credentials at the start of each cycle and drop that copy when the host is done:
/// nothing is cached here. Returns how many fields were replaced. On error `credentials` may be
/// partly resolved; the error names the reference (never a value).
pub async fn resolve_credentials(
    client: &VaultClient,
    credentials: &mut Credentials,
) -> Result<usize, VaultError> {
    // Check every reference first so a typo fails before any request.
    references(credentials)?;
    let mut replaced = 0;
    if let Some(r) = VaultRef::parse(&credentials.username)? {
        let value = client.read_secret(&r.path, &r.field).await?;
        credentials.username = value.expose_secret().to_owned();
        replaced += 1;
    }
    for slot in [
        &mut credentials.password,
        &mut credentials.private_key,
        &mut credentials.passphrase,
    ] {
        if let Some(value) = resolve_secret(client, slot.as_ref()).await? {
            *slot = Some(value);
            replaced += 1;
        }
    }
    Ok(replaced)
}

async fn resolve_secret(
    client: &VaultClient,
    secret: Option<&SecretString>,
) -> Result<Option<SecretString>, VaultError> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    match VaultRef::parse(secret.expose_secret())? {
        Some(r) => client.read_secret(&r.path, &r.field).await.map(Some),
        None => Ok(None),
    }
}
