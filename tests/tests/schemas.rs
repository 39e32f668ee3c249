//! The example files are valid for both the Rust types (`validate-config`) and the JSON Schemas,
//! and the schemas refuse what the types refuse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use luumen_integration::agent::workspace_dir;
use luumen_integration::run_agent;
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    workspace_dir().join("examples").join(name)
}

fn yaml_as_json(path: &Path) -> Value {
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(schema: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(schema).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{value:#}");
}

#[test]
fn example_config_is_valid() {
    let path = example("config.yaml");
    assert_valid(
        &validator(luumen_schemas::CONFIG_SCHEMA),
        &yaml_as_json(&path),
    );
    let out = run_agent(
        &["validate-config", path.to_str().expect("utf-8")],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn example_inventories_are_valid() {
    let schema = validator(luumen_schemas::REMOTE_CONFIG_SCHEMA);
    for name in ["inventory.yaml", "local.yaml"] {
        let path = example(name);
        assert_valid(&schema, &yaml_as_json(&path));
        let out = run_agent(
            &[
                "validate-config",
                "--inventory",
                path.to_str().expect("utf-8"),
            ],
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn schemas_refuse_unknown_keys_and_bad_values() {
    let config = validator(luumen_schemas::CONFIG_SCHEMA);
    let good: Value = serde_json::json!({"api": {"base_url": "https://x/api/v1", "api_key": "k"}});
    assert_valid(&config, &good);
    for bad in [
        serde_json::json!({"api": {"base_url": "https://x", "api_key": "k"}, "max_concurency": 3}),
        serde_json::json!({"api": {"base_url": "ftp://x", "api_key": "k"}}),
        serde_json::json!({"api": {"base_url": "https://x"}, "max_concurrency": 0}),
    ] {
        assert!(!config.is_valid(&bad), "{bad}");
    }
    let remote = validator(luumen_schemas::REMOTE_CONFIG_SCHEMA);
    for bad in [
        serde_json::json!({"hosts": [{"id": "a", "protocol": "ssh"}]}),
        serde_json::json!({"hosts": [{"id": "a", "protocol": "telnet", "address": "h"}]}),
        serde_json::json!({"hosts": [{"id": "a", "protocol": "local", "adress": "h"}]}),
    ] {
        assert!(!remote.is_valid(&bad), "{bad}");
    }
}
