//! The API described as an OpenAPI 3.1 document (`GET /openapi.json`), built from one
//! table of operations. The access tests read every `.route(...)` of this crate's sources
//! and check the served document against them, so a route cannot be added without its
//! entry (`crates/cli/tests/it/access.rs`).

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::access::{scope_for, Scope};
use crate::ApiError;

/// Every operation: method, path, tag and summary.
#[rustfmt::skip]
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    // Ingest (Segment Tracking API; write key as HTTP Basic user).
    ("post", "/v1/batch", "ingest", "Send several messages at once (Segment batch)."),
    ("post", "/v1/track", "ingest", "Record an event."),
    ("post", "/v1/identify", "ingest", "Tie a user to traits."),
    ("post", "/v1/page", "ingest", "Record a page view."),
    ("post", "/v1/p", "ingest", "Record a page view (short form some SDKs use)."),
    ("post", "/v1/screen", "ingest", "Record a screen view."),
    ("post", "/v1/group", "ingest", "Tie a user to a group or account."),
    ("post", "/v1/alias", "ingest", "Link two identities of one user."),
    ("post", "/v1/import", "ingest", "Send several messages at once (the same as /v1/batch, the path some SDKs use)."),
    // Operations.
    ("get", "/", "operations", "Status page (HTML)."),
    ("get", "/healthz", "operations", "The process is up."),
    ("get", "/readyz", "operations", "Storage accepts writes."),
    ("get", "/metrics", "operations", "Prometheus metrics."),
    ("get", "/openapi.json", "operations", "This document."),
    ("get", "/v1/pipeline", "operations", "Processing progress, merges, conflicts, snapshots."),
    // Events and quarantine.
    ("get", "/v1/events", "events", "Stored events, by offset."),
    ("get", "/v1/quarantine", "events", "Quarantined messages with their reasons."),
    ("get", "/v1/quarantine/{id}", "events", "One quarantined message."),
    ("post", "/v1/quarantine/{id}/replay", "events", "Replay a quarantined message, optionally corrected."),
    ("post", "/v1/quarantine/{id}/discard", "events", "Discard a quarantined message."),
    // Profiles.
    ("get", "/v1/profiles", "profiles", "Look up profiles by identifier or trait."),
    ("get", "/v1/profiles/{id}", "profiles", "One profile (a merged-away id answers with the survivor)."),
    ("get", "/v1/profiles/{id}/identity", "profiles", "Why each identifier belongs to the profile."),
    ("get", "/v1/profiles/{id}/events", "profiles", "The profile's history, newest first."),
    ("get", "/v1/profiles/{id}/suggestions", "profiles", "Likely links from probabilistic matching."),
    ("post", "/v1/profiles/{id}/unmerge", "profiles", "Split a wrong merge."),
    // Segments and rules.
    ("get", "/v1/segments", "segments", "Segments with their sizes."),
    ("post", "/v1/segments", "segments", "Define a segment (backfilled at once)."),
    ("get", "/v1/segments/{name}", "segments", "One segment."),
    ("put", "/v1/segments/{name}", "segments", "Redefine a segment (backfilled at once)."),
    ("delete", "/v1/segments/{name}", "segments", "Delete a segment."),
    ("get", "/v1/segments/{name}/members", "segments", "Members, paginated or as CSV."),
    ("get", "/v1/segments/{name}/sizes", "segments", "Size over time."),
    ("get", "/v1/segments/{name}/compare/{other}", "segments", "Two segments side by side: sizes, overlap, later conversion."),
    ("get", "/v1/profiles/{id}/segments", "segments", "A profile's segments with entry times."),
    ("post", "/v1/rules/check", "segments", "Parse and check a rule."),
    ("post", "/v1/rules/preview", "segments", "Dry run: how many profiles a rule would hold now."),
    ("get", "/v1/stream/segments", "segments", "Live entries and exits (server-sent events)."),
    // Scores, triggers and delivery.
    ("get", "/v1/profiles/{id}/scores", "actions", "A profile's intent scores and the signals behind them."),
    ("get", "/v1/stream/scores", "actions", "Live score crossings (server-sent events)."),
    ("get", "/v1/actions", "actions", "Recent actions and their outcomes."),
    ("get", "/v1/triggers", "actions", "Triggers in force."),
    ("get", "/v1/triggers/{name}/uplift", "actions", "Conversion of treated against held-out profiles."),
    ("get", "/v1/destinations", "actions", "Destinations with their queues and counts."),
    ("get", "/v1/destinations/{name}/dead", "actions", "A destination's dead letters."),
    ("post", "/v1/destinations/{name}/dead/replay", "actions", "Send a destination's dead letters again."),
    ("get", "/v1/catalogue", "actions", "Products with price, category and stock."),
    ("post", "/v1/catalogue", "actions", "Add or update products."),
    ("get", "/v1/catalogue/{sku}", "actions", "One product."),
    ("post", "/v1/intent/train", "actions", "Learn the intent model from history."),
    ("get", "/v1/intent/model", "actions", "The intent model in force."),
    ("get", "/v1/profiles/{id}/intent", "actions", "A profile's predicted intent."),
    // Analytics.
    ("get", "/v1/rfm", "analytics", "RFM scores and groups of the customer base."),
    ("get", "/v1/rfm/members", "analytics", "Customers of an RFM group."),
    ("get", "/v1/profiles/{id}/rfm", "analytics", "A profile's RFM scores."),
    ("get", "/v1/attribution", "analytics", "Which channels earned the conversions, by model."),
    ("get", "/v1/clv", "analytics", "Lifetime value of the customer base."),
    ("get", "/v1/clv/model", "analytics", "The lifetime-value model in force."),
    ("post", "/v1/clv/model", "analytics", "Fit and publish a lifetime-value model."),
    ("get", "/v1/profiles/{id}/clv", "analytics", "A profile's lifetime value."),
    ("get", "/v1/funnel", "analytics", "A funnel over event steps."),
    ("get", "/v1/retention", "analytics", "Cohort retention."),
    ("get", "/v1/conversion-rate", "analytics", "Conversion rate over time."),
    ("get", "/v1/recommendations/items/{item}", "analytics", "Items bought together with an item."),
    ("get", "/v1/profiles/{id}/recommendations", "analytics", "Recommendations for a profile."),
    ("get", "/v1/spend", "analytics", "Marketing spend by channel."),
    ("post", "/v1/spend", "analytics", "Record marketing spend."),
    // Privacy.
    ("get", "/v1/profiles/{id}/consent", "privacy", "Consent by purpose, with its history."),
    ("post", "/v1/profiles/{id}/consent", "privacy", "Set consent for purposes."),
    ("get", "/v1/profiles/{id}/export", "privacy", "Everything held about a profile."),
    ("get", "/v1/privacy/export", "privacy", "Export by identifier."),
    ("post", "/v1/privacy/erase", "privacy", "Erase a customer everywhere."),
    ("get", "/v1/privacy/suppressions", "privacy", "Identifiers suppressed after erasure."),
    // Keys.
    ("get", "/v1/keys", "keys", "Keys and their scopes."),
    ("post", "/v1/keys", "keys", "Create a key."),
    ("post", "/v1/keys/{id}/rotate", "keys", "Rotate a key."),
    ("delete", "/v1/keys/{id}", "keys", "Revoke a key."),
    ("get", "/v1/audit", "keys", "The audit log."),
];

fn scope_name(s: Scope) -> &'static str {
    s.name()
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (method, path, tag, summary) in OPERATIONS {
        let m: Method = method.to_uppercase().parse().unwrap_or(Method::GET);
        let ingest = *tag == "ingest";
        let public = matches!(
            *path,
            "/" | "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
        );
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "tags": [tag],
            "summary": summary,
            "operationId": format!("{method} {path}"),
            "responses": {
                "200": {"description": "Success."},
                "default": {"description": "An error.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if ingest {
            op["security"] = json!([{"writeKey": []}]);
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        } else if public {
            op["security"] = json!([]);
        } else {
            let scope = scope_name(scope_for(&m, path));
            op["security"] = json!([{"adminToken": [scope]}]);
            op["description"] = Value::String(format!(
                "Needs an admin token with the `{scope}` scope. The answer's `Niyet-Processed-Offset`, `Niyet-Log-End-Offset` and `Niyet-Caught-Up` headers say where processing stood; `Niyet-Consistent: true` waits for every event acknowledged before the request."
            ));
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(method.to_string(), op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Niyet",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A real-time customer data platform. Events come in over the Segment Tracking API; everything under /v1 but ingest is the admin API. Errors are JSON `{code, message}` with a stable code.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKey": {"type": "http", "scheme": "basic", "description": "The write key as the user name, an empty password."},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "An admin token; its scopes (read, write, privacy, admin) decide what it may call."},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "description": "Stable, for programs."},
                        "message": {"type": "string", "description": "For people."},
                        "details": {"description": "More about the error, where there is more."},
                    },
                },
            },
        },
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    axum::Json(document()).into_response()
}

/// A path that takes other methods: a JSON error naming what was asked.
pub async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    let allowed: Vec<String> = OPERATIONS
        .iter()
        .filter(|(_, p, _, _)| same_shape(p, path))
        .map(|(m, _, _, _)| m.to_uppercase())
        .collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{path} does not take {method}; it takes {}",
            allowed.join(", ")
        ),
    )
}

/// Whether `path` matches the template `t` (`{name}` standing for one segment).
fn same_shape(t: &str, path: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (t.split('/').collect(), path.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || (x.starts_with('{') && x.ends_with('}') && !y.is_empty()))
}

/// Requests no route takes: a JSON error naming what was asked.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no route for {method} {}; /openapi.json lists the API",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_with_scopes_and_errors() {
        let d = document();
        assert_eq!(d["openapi"], "3.1.0");
        let op = &d["paths"]["/v1/privacy/erase"]["post"];
        assert_eq!(op["security"][0]["adminToken"][0], "privacy", "{op}");
        assert_eq!(
            d["paths"]["/v1/segments/{name}"]["delete"]["security"][0]["adminToken"][0],
            "write"
        );
        assert_eq!(
            d["paths"]["/v1/track"]["post"]["security"][0]["writeKey"],
            json!([])
        );
        let p = &d["paths"]["/v1/segments/{name}/compare/{other}"]["get"]["parameters"];
        assert_eq!(p.as_array().map(Vec::len), Some(2), "{p}");
        assert_eq!(
            d["components"]["schemas"]["Error"]["required"],
            json!(["code", "message"])
        );
    }
}
