//! Access control: every admin endpoint × (no key, a write key, a token of each scope),
//! keys created, rotated and revoked through the CLI, rate limits and the audit log.
//!
//! The endpoints are read from the server's source (every `.route(…)`), so a new endpoint
//! is in the matrix without anyone remembering to add it.

use crate::common::*;
use serde_json::{json, Value};

const SOURCES: &[&str] = &[
    include_str!("../../../server/src/access.rs"),
    include_str!("../../../server/src/actions.rs"),
    include_str!("../../../server/src/admin.rs"),
    include_str!("../../../server/src/analytics.rs"),
    include_str!("../../../server/src/catalogue.rs"),
    include_str!("../../../server/src/intent.rs"),
    include_str!("../../../server/src/ingest.rs"),
    include_str!("../../../server/src/privacy.rs"),
    include_str!("../../../server/src/profiles.rs"),
    include_str!("../../../server/src/segments.rs"),
    include_str!("../../../server/src/spend.rs"),
];

/// (method, path) of every route in the server's source.
fn routes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for src in SOURCES {
        let text: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
        for part in text.split(".route(").skip(1) {
            // `.route(` and its path may stand on different lines.
            let Some(rest) = part.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((path, handlers)) = rest.split_once('"') else {
                continue;
            };
            // The handlers up to the closing parenthesis of `.route(`.
            let mut depth = 1;
            let mut end = handlers.len();
            for (i, c) in handlers.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let h = &handlers[..end];
            for m in ["get", "post", "put", "delete"] {
                let called = h.starts_with(&format!(", {m}("))
                    || h.contains(&format!(".{m}("))
                    || h.contains(&format!(" {m}("));
                if called {
                    out.push((m.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
    ) || [
        "/v1/batch",
        "/v1/import",
        "/v1/track",
        "/v1/identify",
        "/v1/page",
        "/v1/p",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
    ]
    .contains(&path)
}

/// The scope each endpoint needs, written out as the documentation states it.
fn needs(method: &str, path: &str) -> &'static str {
    if path.starts_with("/v1/keys") || path.starts_with("/v1/audit") {
        "admin"
    } else if path.starts_with("/v1/privacy")
        || path.ends_with("/consent")
        || path.ends_with("/export")
    {
        "privacy"
    } else if method == "GET" || path == "/v1/rules/check" || path == "/v1/rules/preview" {
        "read"
    } else {
        "write"
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "p_999999")
        .replace("{name}", "no_such_thing")
        .replace("{other}", "no_such_other")
        .replace("{sku}", "no-such-sku")
}

async fn call(method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let c = client();
    let mut r = c.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if method != "GET" {
        r = r.header("content-type", "application/json").body("{}");
    }
    let resp = r.send().await.expect("send");
    let status = resp.status().as_u16();
    // The live stream never ends: its headers are the answer.
    if url.contains("/v1/stream/") && status == 200 {
        return (status, json!({}));
    }
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({"raw": text})),
    )
}

#[tokio::test]
async fn every_admin_endpoint_by_every_kind_of_key() {
    let srv = TestServer::start();
    let base = srv.url();
    let routes = routes();
    assert!(
        routes.len() > 50,
        "the route scan found too few routes: {routes:?}"
    );
    for expected in [
        ("GET", "/v1/profiles/{id}"),
        ("POST", "/v1/privacy/erase"),
        ("GET", "/v1/keys"),
        ("DELETE", "/v1/segments/{name}"),
    ] {
        assert!(
            routes
                .iter()
                .any(|(m, p)| m == expected.0 && p == expected.1),
            "route scan misses {expected:?}"
        );
    }
    // One token per scope, made with the CLI.
    let mut tokens = Vec::new();
    for scope in ["read", "write", "privacy", "admin"] {
        let v = niyet(
            &[
                "keys",
                "create",
                &format!("{scope}-token"),
                "--scope",
                scope,
            ],
            &base,
            ADMIN,
        );
        tokens.push((scope, v["secret"].as_str().expect("secret").to_string()));
    }
    let mut checked = 0;
    for (method, path) in &routes {
        if public(path) {
            continue;
        }
        let url = format!("{base}{}", concrete(path));
        let need = needs(method, path);
        let (s, v) = call(method, &url, None).await;
        assert_eq!(s, 401, "{method} {path} without a key: {v}");
        assert_eq!(v["code"], "missing_admin_token", "{method} {path}");
        let (s, v) = call(method, &url, Some(WRITE_KEY)).await;
        assert_eq!(s, 403, "{method} {path} with a write key: {v}");
        assert_eq!(v["code"], "write_key_not_allowed");
        let (s, v) = call(method, &url, Some("nyt_adm_not-a-real-token")).await;
        assert_eq!(s, 401, "{method} {path} with a made-up token: {v}");
        for (scope, token) in &tokens {
            let allowed = *scope == "admin" || *scope == need;
            let (s, v) = call(method, &url, Some(token)).await;
            if allowed {
                assert!(
                    s != 401 && s != 403,
                    "{method} {path} needs `{need}`: the `{scope}` token was refused: {s} {v}"
                );
            } else {
                assert_eq!(
                    (s, v["code"].as_str()),
                    (403, Some("insufficient_scope")),
                    "{method} {path} needs `{need}`: the `{scope}` token got in: {v}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} checks");
    // Public endpoints need nothing.
    for p in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(call("GET", &format!("{base}{p}"), None).await.0, 200, "{p}");
    }
}

#[tokio::test]
async fn keys_rotate_revoke_rate_limit_and_audit() {
    let srv = TestServer::start();
    let base = srv.url();
    // A write key for the default source sends events and nothing else.
    let wk = niyet(
        &[
            "keys", "create", "shop", "--kind", "write", "--source", "default",
        ],
        &base,
        ADMIN,
    );
    let wk_secret = wk["secret"].as_str().expect("secret").to_string();
    let r = client()
        .post(format!("{base}/v1/track"))
        .basic_auth(&wk_secret, Some(""))
        .json(&json!({"userId": "u1", "event": "Signed Up"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);

    let v = niyet(
        &["keys", "create", "dashboards", "--scope", "read"],
        &base,
        ADMIN,
    );
    let (id, old) = (
        v["id"].as_str().expect("id").to_string(),
        v["secret"].as_str().expect("secret").to_string(),
    );
    assert_eq!(
        call("GET", &format!("{base}/v1/pipeline"), Some(&old))
            .await
            .0,
        200
    );
    let keys_file = std::fs::read_to_string(srv.data_dir().join("keys.json")).expect("keys");
    assert!(!keys_file.contains(&old) && !keys_file.contains(&wk_secret));

    let v = niyet(&["keys", "rotate", &id], &base, ADMIN);
    let new = v["secret"].as_str().expect("secret").to_string();
    assert_ne!(new, old);
    assert_eq!(
        call("GET", &format!("{base}/v1/pipeline"), Some(&old))
            .await
            .0,
        401
    );
    assert_eq!(
        call("GET", &format!("{base}/v1/pipeline"), Some(&new))
            .await
            .0,
        200
    );
    niyet(&["keys", "revoke", &id], &base, ADMIN);
    assert_eq!(
        call("GET", &format!("{base}/v1/pipeline"), Some(&new))
            .await
            .0,
        401
    );
    let list = niyet(&["keys", "list"], &base, ADMIN);
    let listed = list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed")
        .clone();
    assert!(listed["revoked_ms"].is_number() && listed.get("hash").is_none());
    // Configured keys cannot be changed over the API.
    let (s, v) = call(
        "DELETE",
        &format!("{base}/v1/keys/config:admin"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // One request per second, burst two: the third at once is refused with Retry-After.
    let v = niyet(
        &[
            "keys",
            "create",
            "slow",
            "--scope",
            "read",
            "--rate-per-s",
            "1",
        ],
        &base,
        ADMIN,
    );
    let slow = v["secret"].as_str().expect("secret").to_string();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = client()
            .get(format!("{base}/v1/pipeline"))
            .bearer_auth(&slow)
            .send()
            .await
            .expect("send");
        answers.push((
            r.status().as_u16(),
            r.headers()
                .get("retry-after")
                .map(|h| h.to_str().unwrap_or("").to_string()),
        ));
    }
    assert_eq!(answers[0].0, 200);
    assert_eq!(answers[1].0, 200);
    assert_eq!(answers[2], (429, Some("1".to_string())), "{answers:?}");

    // The audit log has the changes, by key id, without secrets.
    let (s, v) = admin_get(&format!("{base}/v1/audit")).await;
    assert_eq!(s, 200);
    let entries = v["entries"].as_array().expect("entries");
    let text = serde_json::to_string(entries).expect("json");
    for secret in [&old, &new, &slow, &wk_secret] {
        assert!(!text.contains(secret.as_str()));
    }
    let rotations: Vec<_> = entries
        .iter()
        .filter(|e| e["path"] == format!("/v1/keys/{id}/rotate") && e["method"] == "POST")
        .collect();
    assert_eq!(rotations.len(), 1, "{entries:?}");
    assert_eq!(rotations[0]["key"], "config:admin");
    assert_eq!(rotations[0]["status"], 200);
}

/// The served OpenAPI document has an entry for every route in the source and no entry
/// without a route (the single-message ingest endpoints, routed without a method filter,
/// are the only ones the source scan cannot see).
#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let srv = TestServer::start();
    let (s, doc) = call("GET", &format!("{}/openapi.json", srv.url()), None).await;
    assert_eq!(s, 200);
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let routes = routes();
    assert!(routes.len() > 70, "the scan found {} routes", routes.len());
    let missing: Vec<_> = routes.iter().filter(|r| !documented.contains(r)).collect();
    assert!(missing.is_empty(), "routes without an entry: {missing:?}");
    let stale: Vec<_> = documented
        .iter()
        .filter(|d| !(routes.contains(d) || d.0 == "POST" && public(&d.1)))
        .collect();
    assert!(stale.is_empty(), "entries without a route: {stale:?}");
}
