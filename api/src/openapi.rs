//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations.

use serde_json::json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::http;

struct ApiKeyHeader;

impl Modify for ApiKeyHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("api-key"))),
        );
        // Every authenticated operation can answer 400 (bad query or body), 401 (missing or
        // unknown key) and 403 (key of the other role); one with a body also 413 (too large)
        // and 415 (not JSON). All with an ErrorBody.
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if operation.security.is_none() {
                    continue;
                }
                let mut codes = vec![
                    ("400", "Invalid request"),
                    ("401", "Missing or unknown API key"),
                    ("403", "The key's role may not call this endpoint"),
                ];
                if operation.request_body.is_some() {
                    codes.push(("413", "Request body too large"));
                    codes.push(("415", "The body is not `application/json`"));
                }
                for (code, description) in codes {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

/// utoipa's actix extras add a bare parameter for each `web::Path` argument next to the one
/// documented with `params(...)`; keep the first (documented) one of each name and location.
struct UniqueParameters;

impl Modify for UniqueParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(parameters) = operation.parameters.as_mut() {
                    let mut seen = Vec::new();
                    parameters.retain(|p| {
                        let key = (p.name.clone(), serde_json::to_string(&p.parameter_in).ok());
                        let first = !seen.contains(&key);
                        seen.push(key);
                        first
                    });
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Luumen API", description = "Self-hosted Luumen API (luumen-api)."),
    modifiers(&ApiKeyHeader, &UniqueParameters),
    paths(
        http::healthz,
        http::get_config,
        http::post_reports,
        http::create_host,
        http::list_hosts,
        http::get_host,
        http::update_host,
        http::delete_host,
        http::host_history,
        http::host_changes,
        http::create_credential,
        http::list_credentials,
        http::delete_credential,
        http::put_default_credentials,
        http::put_schedule,
        http::get_settings,
        http::list_audit,
        http::software_versions,
        http::software_hosts,
    )
)]
struct ApiDoc;

/// Not blank: at least one character outside Unicode `White_Space` (what `str::trim` strips).
pub const NON_BLANK: &str = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served, with the cross-field rules utoipa cannot express (`anyOf`):
/// a host needs a non-blank `address` unless its protocol is `local`, and a credential
/// needs a `password` or a `private_key`.
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(document()).unwrap_or_default();
    let schemas = &mut doc["components"]["schemas"];
    for host in ["HostSpec", "HostUpdate"] {
        if let Some(schema) = schemas.get_mut(host).and_then(|s| s.as_object_mut()) {
            schema.insert(
                "anyOf".into(),
                json!([
                    {"properties": {"protocol": {"const": "local"}}},
                    {"required": ["address"],
                     "properties": {"address": {"type": "string", "pattern": NON_BLANK}}},
                ]),
            );
        }
    }
    if let Some(schema) = schemas
        .get_mut("CredentialInput")
        .and_then(|s| s.as_object_mut())
    {
        schema.insert(
            "anyOf".into(),
            json!([
                {"required": ["password"], "properties": {"password": {"type": "string"}}},
                {"required": ["private_key"], "properties": {"private_key": {"type": "string"}}},
            ]),
        );
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(p)) = map.get("pattern") {
                    out.push(p.clone());
                }
                map.values().for_each(|v| patterns(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| patterns(v, out)),
            _ => {}
        }
    }

    /// The patterns spelled out in the annotations (utoipa takes literals only) stay the ones
    /// the handlers implement.
    #[test]
    fn parameters_are_unique() {
        let doc = document_json();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let mut keys: Vec<_> = operation["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| (p["name"].clone(), p["in"].clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let total = keys.len();
                keys.sort_by_key(|k| format!("{k:?}"));
                keys.dedup();
                assert_eq!(keys.len(), total, "{method} {path}");
                if path.contains("{id}") {
                    let id = operation["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["name"] == "id")
                        .unwrap();
                    assert_eq!(id["schema"]["pattern"], NON_BLANK, "{method} {path}");
                }
            }
        }
    }

    #[test]
    fn every_pattern_is_a_known_one() {
        let class = NON_BLANK.trim_start_matches("[^").trim_end_matches(']');
        let known = [
            NON_BLANK.to_owned(),
            format!("^[{class}]*-----BEGIN "),
            r"^(63313[aA](3[0-9]){1,18})?$".to_owned(),
            r"^(63313[aA](3[0-9]){1,18}2[eE](3[0-9]){1,18})?$".to_owned(),
        ];
        let mut found = Vec::new();
        patterns(&document_json(), &mut found);
        assert!(found.len() > 10, "{found:?}");
        for pattern in found {
            assert!(known.contains(&pattern), "unknown pattern {pattern:?}");
        }
    }

    /// `NON_BLANK` excludes exactly Unicode `White_Space`, what `str::trim` strips.
    #[test]
    fn non_blank_matches_trim() {
        let class = NON_BLANK.trim_start_matches("[^").trim_end_matches(']');
        let mut excluded = Vec::new();
        let mut rest = class;
        let next = |rest: &mut &str| -> char {
            if let Some(r) = rest.strip_prefix(r"\u") {
                let c = char::from_u32(u32::from_str_radix(&r[..4], 16).unwrap()).unwrap();
                *rest = &r[4..];
                c
            } else if let Some(r) = rest.strip_prefix(r"\x") {
                let c = char::from_u32(u32::from_str_radix(&r[..2], 16).unwrap()).unwrap();
                *rest = &r[2..];
                c
            } else if let Some(r) = rest.strip_prefix(r"\t") {
                *rest = r;
                '\t'
            } else if let Some(r) = rest.strip_prefix(r"\r") {
                *rest = r;
                '\r'
            } else {
                let c = rest.chars().next().unwrap();
                *rest = &rest[c.len_utf8()..];
                c
            }
        };
        while !rest.is_empty() {
            let start = next(&mut rest);
            if let Some(r) = rest.strip_prefix('-') {
                rest = r;
                let end = next(&mut rest);
                excluded.extend(start..=end);
            } else {
                excluded.push(start);
            }
        }
        let white: Vec<char> = (0..=0x10ffff_u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        excluded.sort_unstable();
        assert_eq!(excluded, white);
    }
}
