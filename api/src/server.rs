//! The commands: `init`, `serve`, `create-key`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{middleware, web, App, HttpServer};
use anyhow::{bail, Context};
use zeroize::Zeroizing;

use crate::crypto::{hash_api_key, hex, new_api_key, unhex, MasterKey};
use crate::http::{self, AppState};
use crate::store::sqlite::{SqliteStore, DB_FILE};
use crate::store::{Role, Store};

const CANARY_CONTEXT: &str = "master-key-check";

/// Creates the data dir (mode 0700), the database and the master key; returns the first
/// admin and agent keys, which are shown once and stored only as hashes.
pub fn init(data_dir: &Path) -> anyhow::Result<(Zeroizing<String>, Zeroizing<String>)> {
    if data_dir.join(DB_FILE).exists() {
        bail!("{} is already initialized", data_dir.display());
    }
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", data_dir.display()))?;
    }
    let master = MasterKey::create(data_dir)?;
    let store = SqliteStore::open(data_dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let db = data_dir.join(DB_FILE);
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", db.display()))?;
    }
    let canary = master.seal(b"luumen", CANARY_CONTEXT)?;
    store_canary(&store, &hex(&canary))?;
    let admin = new_api_key()?;
    let admin_id = store.create_api_key(Role::Admin, &hash_api_key(&admin))?;
    let agent = new_api_key()?;
    let agent_id = store.create_api_key(Role::Agent, &hash_api_key(&agent))?;
    store.audit(None, "initialized", None, None)?;
    store.audit(None, "api_key_created", Some(&admin_id), Some("role=admin"))?;
    store.audit(None, "api_key_created", Some(&agent_id), Some("role=agent"))?;
    Ok((admin, agent))
}

fn store_canary(store: &SqliteStore, value: &str) -> anyhow::Result<()> {
    store.set_raw_setting("master_key_check", value)?;
    Ok(())
}

fn open_initialized(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    if !data_dir.join(DB_FILE).exists() {
        bail!(
            "{} has no database; run `luumen-api init --data-dir {}` first",
            data_dir.display(),
            data_dir.display()
        );
    }
    Ok(SqliteStore::open(data_dir)?)
}

/// Adds an API key; returns it (shown once) and its id.
pub fn create_key(data_dir: &Path, role: Role) -> anyhow::Result<(Zeroizing<String>, String)> {
    let store = open_initialized(data_dir)?;
    let key = new_api_key()?;
    let id = store.create_api_key(role, &hash_api_key(&key))?;
    store.audit(
        None,
        "api_key_created",
        Some(&id),
        Some(&format!("role={}", role.as_str())),
    )?;
    Ok((key, id))
}

/// Options of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_report_bytes: usize,
    pub workers: Option<usize>,
}

fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("certificate and key do not match")?;
    Ok(config)
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let store = open_initialized(&options.data_dir)?;
    let master = MasterKey::load(&options.data_dir)?;
    if let Some(canary) = store.raw_setting("master_key_check")? {
        let sealed = unhex(&canary).context("corrupted master_key_check")?;
        master
            .open(&sealed, CANARY_CONTEXT)
            .context("the master key does not match this database")?;
    }
    let state = web::Data::new(AppState {
        store: Arc::new(store) as Arc<dyn Store>,
        master: Arc::new(master),
        max_report_bytes: options.max_report_bytes,
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(http::log_requests))
            .configure(http::configure)
    });
    if let Some(workers) = options.workers {
        server = server.workers(workers);
    }
    let addr: SocketAddr = options
        .listen
        .parse()
        .with_context(|| format!("--listen {:?} is not an address:port", options.listen))?;
    let tls = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match tls {
        Some(config) => server.bind_rustls_0_23(addr, config),
        None => server.bind(addr),
    }
    .with_context(|| format!("binding {addr}"))?;
    for bound in server.addrs() {
        tracing::info!(
            address = %bound,
            base_url = %format!("{scheme}://{bound}/api/v1"),
            "listening"
        );
    }
    server.run().await.context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
