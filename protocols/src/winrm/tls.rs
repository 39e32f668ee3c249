//! TLS trust for WinRM over HTTPS: the system roots, a CA file, or a pinned certificate.
//!
//! winrm-rs 1.1.2 trusts only the webpki (Mozilla) roots or nothing at all, so the connector
//! (see `connector.rs`) makes the TLS connection itself with the configuration built here.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::TlsTrust;
use crate::ErrorKind;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The operating system's trusted roots (`/etc/ssl/certs`), loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "no trusted root certificates found on this system ({}); install ca-certificates or set ca_file",
                    errors.join("; ")
                ));
            }
            Ok(Arc::new(store))
        })
        .clone()
}

fn roots_from_file(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse CA file {}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "CA file {} holds no usable certificate",
            path.display()
        ));
    }
    Ok(Arc::new(store))
}

/// The client configuration for one host's trust settings.
pub(super) fn client_config(trust: &TlsTrust) -> Result<Arc<ClientConfig>, ErrorKind> {
    let settings = |reason: String| ErrorKind::Settings { reason };
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| settings(format!("TLS setup: {e}")))?;
    let webpki = |roots: Arc<RootCertStore>| {
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| settings(format!("TLS setup: {e}")))
    };
    let config = match (&trust.ca_file, trust.cert_sha256) {
        (ca_file, Some(pin)) => {
            let chain = match ca_file {
                Some(path) => Some(webpki(roots_from_file(path).map_err(settings)?)?),
                None => None,
            };
            let verifier = PinnedVerifier {
                pin,
                chain,
                algorithms: provider.signature_verification_algorithms,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        (Some(path), None) => builder
            .with_webpki_verifier(webpki(roots_from_file(path).map_err(settings)?)?)
            .with_no_client_auth(),
        (None, None) => builder
            .with_webpki_verifier(webpki(system_roots().map_err(settings)?)?)
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// SHA-256 of a DER certificate, as lowercase hex pairs joined by `:`.
pub(super) fn fingerprint_hex(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts exactly the certificate whose SHA-256 is pinned (and, when a CA file is given too,
/// only if its chain also verifies). Handshake signatures are still checked, so the server must
/// hold the pinned certificate's private key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct PinMismatch {
    presented: String,
    expected: String,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate SHA-256 {} is not the pinned {}",
            self.presented, self.expected
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if digest != self.pin {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    presented: fingerprint_hex(&digest),
                    expected: fingerprint_hex(&self.pin),
                })),
            )));
        }
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Parses a pinned fingerprint: 64 hex digits, optionally in `:`-separated pairs, optionally
/// prefixed `sha256:` / `SHA256:`.
pub fn parse_sha256_pin(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed);
    let hex: String = body.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "certificate fingerprint {text:?} is not a SHA-256 (64 hex digits, optionally in pairs separated by ':')"
        ));
    }
    let mut pin = [0u8; 32];
    for (i, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("certificate fingerprint {text:?}: {e}"))?;
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_every_usual_spelling() {
        let hex = "ab".repeat(32);
        let pairs = vec!["AB"; 32].join(":");
        for text in [
            hex.clone(),
            pairs,
            format!("sha256:{hex}"),
            format!(" SHA256:{hex} "),
        ] {
            assert_eq!(parse_sha256_pin(&text), Ok([0xab; 32]), "{text}");
        }
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(parse_sha256_pin(bad).is_err(), "{bad}");
        }
        assert_eq!(fingerprint_hex(&[0xab, 0x01]), "ab:01");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_settings_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        for path in [dir.path().join("missing.pem"), empty] {
            let trust = TlsTrust {
                ca_file: Some(path.clone()),
                cert_sha256: None,
            };
            match client_config(&trust) {
                Err(ErrorKind::Settings { reason }) => {
                    assert!(reason.contains(&path.display().to_string()), "{reason}")
                }
                other => panic!("expected a settings error, got {other:?}"),
            }
        }
    }
}
