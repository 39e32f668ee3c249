//! `vault:path/to/secret#field` references in credential fields.

use std::fmt;

use super::VaultError;

/// The prefix that marks a credential value as a Vault reference.
pub const PREFIX: &str = "vault:";

/// A parsed `vault:path/to/secret#field` reference: a KV v2 path under the configured mount and
/// the field of that secret's data. Holds no secret, so it prints as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultRef {
    /// The secret's path under the mount, e.g. `hosts/db1` (no leading or trailing `/`).
    pub path: String,
    /// The key in the secret's data, e.g. `password`.
    pub field: String,
}

impl VaultRef {
    /// Parses `value` if it starts with `vault:`; `Ok(None)` for any other value (a plain
    /// credential). A value that starts with `vault:` but is malformed is an error.
    pub fn parse(value: &str) -> Result<Option<VaultRef>, VaultError> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let invalid = |reason: &'static str| VaultError::InvalidReference {
            // Only the part after the prefix is shown, and only when it is a reference: a
            // plain value (which could be a password) never reaches this point.
            reference: value.to_owned(),
            reason,
        };
        let (path, field) = rest
            .split_once('#')
            .ok_or_else(|| invalid("expected vault:PATH#FIELD"))?;
        if path.is_empty() {
            return Err(invalid("the path is empty"));
        }
        if field.is_empty() {
            return Err(invalid("the field after '#' is empty"));
        }
        if path.starts_with('/') || path.ends_with('/') {
            return Err(invalid("the path must not start or end with '/'"));
        }
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(invalid("the path has an empty segment ('//')"));
            }
            if segment == "." || segment == ".." {
                return Err(invalid("the path must not contain '.' or '..' segments"));
            }
            if !segment.chars().all(allowed_path_char) {
                return Err(invalid(
                    "the path may contain only letters, digits and - _ . @ + = , ~ : /",
                ));
            }
        }
        if field.chars().any(|c| c.is_control() || c == '#') {
            return Err(invalid("the field contains a control character or '#'"));
        }
        Ok(Some(VaultRef {
            path: path.to_owned(),
            field: field.to_owned(),
        }))
    }

    /// Whether `value` is written as a Vault reference (starts with `vault:`).
    pub fn is_reference(value: &str) -> bool {
        value.starts_with(PREFIX)
    }
}

fn allowed_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+' | '=' | ',' | '~' | ':')
}

impl fmt::Display for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}#{}", self.path, self.field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_field() {
        let r = VaultRef::parse("vault:hosts/db1#password")
            .unwrap()
            .unwrap();
        assert_eq!(r.path, "hosts/db1");
        assert_eq!(r.field, "password");
        assert_eq!(r.to_string(), "vault:hosts/db1#password");
        let r = VaultRef::parse("vault:db1#private_key").unwrap().unwrap();
        assert_eq!((r.path.as_str(), r.field.as_str()), ("db1", "private_key"));
    }

    #[test]
    fn plain_values_are_not_references() {
        assert_eq!(VaultRef::parse("hunter2").unwrap(), None);
        assert_eq!(VaultRef::parse("").unwrap(), None);
        assert_eq!(VaultRef::parse("Vault:x#y").unwrap(), None);
        assert!(!VaultRef::is_reference("hunter2"));
        assert!(VaultRef::is_reference("vault:a#b"));
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in [
            "vault:",
            "vault:hosts/db1",
            "vault:#password",
            "vault:hosts/db1#",
            "vault:/hosts/db1#password",
            "vault:hosts/db1/#password",
            "vault:hosts//db1#password",
            "vault:hosts/../root#password",
            "vault:hosts/./db1#password",
            "vault:hosts/db 1#password",
            "vault:hosts/db1?x=1#password",
            "vault:hosts/%2e%2e#password",
            "vault:hosts/db1#pass#word",
            "vault:hosts/db1#pass\nword",
        ] {
            let err = VaultRef::parse(bad).unwrap_err();
            assert!(
                matches!(err, VaultError::InvalidReference { .. }),
                "{bad:?}: {err:?}"
            );
            assert!(err.to_string().contains("vault:"), "{err}");
            assert!(!err.is_retriable());
        }
    }
}
