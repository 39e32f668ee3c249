//! Reading config.yaml and inventory files. Only the agent reads files; the types and their
//! validation live in `luumen_schemas`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use config::{Config, File, FileFormat};
use luumen_schemas::config::LocalConfig;
use luumen_schemas::inventory::Inventory;

/// Environment variables that override config.yaml keys.
const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("LUUMEN_API_KEY", "api.api_key"),
    ("LUUMEN_API_BASE_URL", "api.base_url"),
    ("LUUMEN_LOG_DIR", "log_dir"),
];

fn format_of(path: &Path) -> FileFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => FileFormat::Json,
        _ => FileFormat::Yaml,
    }
}

fn source(path: &Path) -> anyhow::Result<File<config::FileSourceFile, FileFormat>> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    Ok(File::from(path).format(format_of(path)).required(true))
}

/// Reads and validates config.yaml, with environment overrides.
pub fn load_local(path: &Path) -> anyhow::Result<LocalConfig> {
    let mut builder = Config::builder().add_source(source(path)?);
    for (variable, key) in ENV_OVERRIDES {
        if let Ok(value) = std::env::var(variable) {
            builder = builder
                .set_override(*key, value)
                .with_context(|| format!("{variable} cannot override {key}"))?;
        }
    }
    let config: LocalConfig = builder
        .build()
        .and_then(Config::try_deserialize)
        .with_context(|| format!("invalid config file {}", path.display()))?;
    config
        .validate()
        .with_context(|| format!("invalid config file {}", path.display()))?;
    Ok(config)
}

/// Reads and validates an inventory file (YAML or JSON).
pub fn load_inventory(path: &Path) -> anyhow::Result<Inventory> {
    let inventory: Inventory = Config::builder()
        .add_source(source(path)?)
        .build()
        .and_then(Config::try_deserialize)
        .with_context(|| format!("invalid inventory file {}", path.display()))?;
    inventory
        .validate()
        .with_context(|| format!("invalid inventory file {}", path.display()))?;
    Ok(inventory)
}

/// Parses and validates the remote config served by the API.
pub fn parse_remote(body: &[u8], url: &str) -> anyhow::Result<Inventory> {
    let inventory: Inventory = serde_json::from_slice(body)
        .with_context(|| format!("invalid remote config from {url}"))?;
    inventory
        .validate()
        .with_context(|| format!("invalid remote config from {url}"))?;
    Ok(inventory)
}

/// `validate-config`: prints what was checked and exits 0 when the file is valid.
pub fn validate_file(path: &Path, inventory: bool) -> anyhow::Result<ExitCode> {
    if inventory {
        let inventory = load_inventory(path)?;
        println!(
            "{}: valid inventory: {} hosts, interval {} s",
            path.display(),
            inventory.hosts.len(),
            inventory.schedule.interval_seconds
        );
    } else {
        let config = load_local(path)?;
        println!(
            "{}: valid config: API {}, max_concurrency {}",
            path.display(),
            config.api.base_url,
            config.max_concurrency
        );
    }
    Ok(ExitCode::SUCCESS)
}
