//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations.

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
        // unknown key) and 403 (key of the other role), all with an ErrorBody.
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
                for (code, description) in [
                    ("400", "Invalid request"),
                    ("401", "Missing or unknown API key"),
                    ("403", "The key's role may not call this endpoint"),
                ] {
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
    modifiers(&ApiKeyHeader),
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

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
