//! Who may call what.
//!
//! * **Write keys** belong to one source and only send events (the ingest endpoints).
//! * **Admin tokens** carry scopes: `read` (every `GET` of the admin API), `write`
//!   (changes: segments, un-merge, quarantine decisions, catalogue, spend, retraining,
//!   dead-letter replay), `privacy` (consent, export, erasure, the suppression list) and
//!   `admin` (keys and the audit log; it includes every other scope).
//!
//! Keys are stored as SHA-256 digests in `<data_dir>/keys.json` (the secret is shown once,
//! when it is created or rotated), looked up by digest and compared in constant time. Keys
//! from the configuration (`admin_token`, `[[sources]] write_key`) and the generated ones
//! of `credentials.toml` are held the same way in memory and cannot be changed over the
//! API (and are not rate limited). Every other key has a token bucket on the server's
//! `Clock` (`rate_per_s`, a burst of twice that); an empty bucket answers 429 with
//! `Retry-After`. Every admin request that
//! changes something, and every privacy or admin request, is appended to
//! `<data_dir>/audit.ndjson` (time, key id, method, path, status; never a body).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reading the admin API.
    Read,
    /// Changing definitions and data.
    Write,
    /// Consent, export, erasure.
    Privacy,
    /// Keys and the audit log; implies every scope.
    Admin,
}

impl Scope {
    /// Parses `read`, `write`, `privacy` or `admin`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "privacy" => Some(Scope::Privacy),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Privacy => "privacy",
            Scope::Admin => "admin",
        }
    }
}

/// Write key or admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Ingest only, for one source.
    Write,
    /// The admin API, within its scopes.
    Admin,
}

/// A key as stored (never the secret itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Stable id (`key_…`), used to rotate or revoke it.
    pub id: String,
    /// For people.
    pub name: String,
    /// Write key or admin token.
    pub kind: KeyKind,
    /// The source a write key sends for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Scopes of an admin token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Requests per second (burst: twice that); none: the default of its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// When it was made.
    pub created_ms: i64,
    /// When it was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_ms: Option<i64>,
    /// When it was revoked (it no longer works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
    /// From the configuration: not changeable over the API.
    #[serde(skip)]
    pub configured: bool,
}

impl KeyRecord {
    fn allows(&self, need: Scope) -> bool {
        self.kind == KeyKind::Admin && self.scopes.iter().any(|s| *s == need || *s == Scope::Admin)
    }

    /// The record as the API shows it (no digest).
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("hash");
            o.insert("configured".into(), self.configured.into());
        }
        v
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such key.
    #[error("no key with id `{0}`")]
    NotFound(String),
    /// A request that cannot be honoured.
    #[error("{0}")]
    Invalid(String),
    /// The keys file could not be written.
    #[error("keys could not be saved: {0}")]
    Io(String),
}

struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// The keys in force, their rate limits and the audit log.
pub struct Keys {
    path: PathBuf,
    audit_path: PathBuf,
    records: RwLock<Vec<KeyRecord>>,
    /// Digest → index in `records`.
    by_digest: RwLock<HashMap<[u8; 32], usize>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    audit: Mutex<()>,
    /// Default rates per kind (requests per second; 0: unlimited).
    pub admin_rate: f64,
    pub write_rate: f64,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id.
    pub id: String,
    /// Its source, for a write key.
    pub source: Option<String>,
}

impl Keys {
    /// Loads `keys.json` and adds the configured keys: `(name, kind, source, secret)`.
    pub fn open(
        data_dir: &Path,
        configured: Vec<(String, KeyKind, Option<String>, String)>,
        admin_rate: f64,
        write_rate: f64,
    ) -> Result<Keys, KeyError> {
        let path = data_dir.join("keys.json");
        let mut records: Vec<KeyRecord> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| KeyError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(KeyError::Io(format!("{}: {e}", path.display()))),
        };
        for (name, kind, source, secret) in configured {
            records.push(KeyRecord {
                id: format!("config:{name}"),
                name,
                kind,
                source,
                scopes: if kind == KeyKind::Admin {
                    vec![Scope::Admin]
                } else {
                    Vec::new()
                },
                hash: hex(&digest(&secret)),
                prefix: secret.chars().take(8).collect(),
                // The operator's own keys are not limited; created ones are.
                rate_per_s: Some(0.0),
                created_ms: 0,
                rotated_ms: None,
                revoked_ms: None,
                configured: true,
            });
        }
        let k = Keys {
            path,
            audit_path: data_dir.join("audit.ndjson"),
            records: RwLock::new(records),
            by_digest: RwLock::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            audit: Mutex::new(()),
            admin_rate,
            write_rate,
        };
        k.reindex();
        Ok(k)
    }

    fn reindex(&self) {
        let recs = self.records.read().map(|r| r.clone()).unwrap_or_default();
        let map = recs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.revoked_ms.is_none())
            .filter_map(|(i, r)| unhex(&r.hash).map(|d| (d, i)))
            .collect();
        if let Ok(mut m) = self.by_digest.write() {
            *m = map;
        }
    }

    /// The key whose secret is `secret`, if it is valid.
    pub fn find(&self, secret: &str) -> Option<KeyRecord> {
        let d = digest(secret);
        let i = *self.by_digest.read().ok()?.get(&d)?;
        let r = self.records.read().ok()?.get(i)?.clone();
        let stored = unhex(&r.hash)?;
        (constant_time_eq(&stored, &d) && r.revoked_ms.is_none()).then_some(r)
    }

    /// Takes one request from the key's bucket; `Err(seconds)` to wait when empty.
    pub fn take(&self, r: &KeyRecord, now_ms: i64) -> Result<(), u64> {
        let rate = r.rate_per_s.unwrap_or(match r.kind {
            KeyKind::Admin => self.admin_rate,
            KeyKind::Write => self.write_rate,
        });
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = (rate * 2.0).max(1.0);
        let Ok(mut b) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = b.entry(r.id.clone()).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
        });
        let elapsed = (now_ms - bucket.at_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Every key (no digests).
    pub fn list(&self) -> Vec<KeyRecord> {
        self.records.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn save(&self, recs: &[KeyRecord]) -> Result<(), KeyError> {
        let stored: Vec<&KeyRecord> = recs.iter().filter(|r| !r.configured).collect();
        let text = serde_json::to_vec_pretty(&stored).map_err(|e| KeyError::Io(e.to_string()))?;
        crate::write_synced(&self.path, &text).map_err(|e| KeyError::Io(e.to_string()))
    }

    /// Creates a key; returns its record and the secret (shown only now).
    pub fn create(
        &self,
        name: &str,
        kind: KeyKind,
        source: Option<String>,
        scopes: Vec<Scope>,
        rate_per_s: Option<f64>,
        now_ms: i64,
    ) -> Result<(KeyRecord, String), KeyError> {
        if name.trim().is_empty() {
            return Err(KeyError::Invalid("a key needs a name".into()));
        }
        match kind {
            KeyKind::Admin if scopes.is_empty() => {
                return Err(KeyError::Invalid(
                    "an admin token needs at least one scope (read, write, privacy, admin)".into(),
                ))
            }
            KeyKind::Write if source.is_none() => {
                return Err(KeyError::Invalid("a write key needs a source".into()))
            }
            _ => {}
        }
        if rate_per_s.is_some_and(|r| !r.is_finite() || r < 0.0) {
            return Err(KeyError::Invalid(
                "rate_per_s must be a non-negative number".into(),
            ));
        }
        let id = format!("key_{}", random_hex(6)?);
        let secret = new_secret(kind)?;
        let rec = KeyRecord {
            id,
            name: name.trim().to_string(),
            kind,
            source,
            scopes,
            hash: hex(&digest(&secret)),
            prefix: secret.chars().take(12).collect(),
            rate_per_s,
            created_ms: now_ms,
            rotated_ms: None,
            revoked_ms: None,
            configured: false,
        };
        let mut recs = self
            .records
            .write()
            .map_err(|_| KeyError::Io("lock".into()))?;
        let mut next = recs.clone();
        next.push(rec.clone());
        self.save(&next)?;
        *recs = next;
        drop(recs);
        self.reindex();
        Ok((rec, secret))
    }

    fn change(
        &self,
        id: &str,
        f: impl FnOnce(&mut KeyRecord) -> Result<Option<String>, KeyError>,
    ) -> Result<(KeyRecord, Option<String>), KeyError> {
        let mut recs = self
            .records
            .write()
            .map_err(|_| KeyError::Io("lock".into()))?;
        let mut next = recs.clone();
        let r = next
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| KeyError::NotFound(id.to_string()))?;
        if r.configured {
            return Err(KeyError::Invalid(format!(
                "key `{id}` comes from the configuration; change it there"
            )));
        }
        if r.revoked_ms.is_some() {
            return Err(KeyError::Invalid(format!("key `{id}` is revoked")));
        }
        let secret = f(r)?;
        let out = r.clone();
        self.save(&next)?;
        *recs = next;
        drop(recs);
        self.reindex();
        Ok((out, secret))
    }

    /// Gives the key a new secret; the old one stops working at once.
    pub fn rotate(&self, id: &str, now_ms: i64) -> Result<(KeyRecord, String), KeyError> {
        let (r, s) = self.change(id, |r| {
            let secret = new_secret(r.kind)?;
            r.hash = hex(&digest(&secret));
            r.prefix = secret.chars().take(12).collect();
            r.rotated_ms = Some(now_ms);
            Ok(Some(secret))
        })?;
        Ok((r, s.unwrap_or_default()))
    }

    /// Revokes the key for good.
    pub fn revoke(&self, id: &str, now_ms: i64) -> Result<KeyRecord, KeyError> {
        self.change(id, |r| {
            r.revoked_ms = Some(now_ms);
            Ok(None)
        })
        .map(|(r, _)| r)
    }

    /// Appends one line to the audit log (synced).
    pub fn audit(&self, entry: &serde_json::Value) {
        let Ok(_g) = self.audit.lock() else {
            return;
        };
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.audit_path)
            .and_then(|mut f| {
                f.write_all(&line)?;
                f.sync_data()
            });
        if let Err(e) = r {
            tracing::error!(error = %e, "the audit log could not be written");
        }
    }

    /// The audit log, newest last; at most `limit` entries from the end.
    pub fn audit_tail(&self, limit: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(limit)..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn random_hex(n: usize) -> Result<String, KeyError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| KeyError::Io(e.to_string()))?;
    Ok(hex(&b))
}

fn new_secret(kind: KeyKind) -> Result<String, KeyError> {
    let p = match kind {
        KeyKind::Admin => "nyt_adm",
        KeyKind::Write => "nyt_wk",
    };
    Ok(format!("{p}_{}", random_hex(24)?))
}

/// Paths anyone may call: health, metrics, the status page and ingest (which checks its
/// write key itself).
fn public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz"
            | "/readyz"
            | "/openapi.json"
            | "/metrics"
            | "/v1/batch"
            | "/v1/import"
            | "/v1/track"
            | "/v1/identify"
            | "/v1/page"
            | "/v1/p"
            | "/v1/screen"
            | "/v1/group"
            | "/v1/alias"
    )
}

/// The scope a request needs.
pub fn scope_for(method: &Method, path: &str) -> Scope {
    if path.starts_with("/v1/keys") || path.starts_with("/v1/audit") {
        return Scope::Admin;
    }
    if path.starts_with("/v1/privacy") || path.ends_with("/consent") || path.ends_with("/export") {
        return Scope::Privacy;
    }
    // Checking and previewing a rule change nothing.
    if *method == Method::GET || matches!(path, "/v1/rules/check" | "/v1/rules/preview") {
        Scope::Read
    } else {
        Scope::Write
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// The middleware in front of every route.
pub async fn layer(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if public(req.uri().path()) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let need = scope_for(&method, &path);
    let key = match bearer(&req) {
        None => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_admin_token",
                "the admin API needs 'Authorization: Bearer <admin token>'",
            )
            .into_response()
        }
        Some(t) => match st.keys.find(t) {
            Some(k) => k,
            None => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_admin_token",
                    "the admin token is not valid (unknown, rotated or revoked)",
                )
                .into_response()
            }
        },
    };
    if key.kind == KeyKind::Write {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "write_key_not_allowed",
            "a write key only sends events; the admin API needs an admin token",
        )
        .into_response();
    }
    if !key.allows(need) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "{method} {path} needs the `{}` scope; this token has {:?}",
                need.name(),
                key.scopes.iter().map(|s| s.name()).collect::<Vec<_>>()
            ),
        )
        .into_response();
    }
    let now = st.clock.now_ms();
    if let Err(wait) = st.keys.take(&key, now) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for key `{}`; retry later", key.id),
        );
        e.retry_after = Some(wait);
        return e.into_response();
    }
    let mut req = req;
    req.extensions_mut().insert(Caller {
        id: key.id.clone(),
        source: key.source.clone(),
    });
    let arrived = match crate::position::wants_wait(&req) {
        Ok(wait) => crate::position::arrive(&st, wait).await,
        Err(e) => Err(e),
    };
    let position = match arrived {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut resp = next.run(req).await;
    crate::position::stamp(&mut resp, &position);
    if method != Method::GET || matches!(need, Scope::Privacy | Scope::Admin) {
        st.keys.audit(&serde_json::json!({
            "time": niyet_model::format_rfc3339_millis(now),
            "key": key.id,
            "method": method.as_str(),
            "path": path,
            "status": resp.status().as_u16(),
        }));
    }
    resp
}

/// `POST /v1/keys`, `GET /v1/keys`, `POST /v1/keys/{id}/rotate`, `DELETE /v1/keys/{id}`,
/// `GET /v1/audit`.
pub(crate) fn routes() -> axum::Router<Arc<AppState>> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{id}/rotate", post(rotate))
        .route("/v1/keys/{id}", delete(revoke))
        .route("/v1/audit", get(audit))
}

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        KeyError::Invalid(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_key_request",
            e.to_string(),
        ),
        KeyError::Io(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_unavailable",
            e.to_string(),
        ),
    }
}

async fn list(State(st): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    let keys: Vec<_> = st.keys.list().iter().map(KeyRecord::view).collect();
    axum::Json(serde_json::json!({ "keys": keys }))
}

#[derive(Deserialize)]
struct NewKey {
    name: String,
    kind: KeyKind,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    rate_per_s: Option<f64>,
}

async fn create(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let n: NewKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("expected {{\"name\",\"kind\":\"write\"|\"admin\",\"source\"?,\"scopes\"?,\"rate_per_s\"?}}: {e}"),
        )
    })?;
    let mut scopes = Vec::new();
    for s in &n.scopes {
        scopes.push(Scope::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("unknown scope `{s}` (read, write, privacy, admin)"),
            )
        })?);
    }
    if n.kind == KeyKind::Write {
        let src = n.source.as_deref().unwrap_or("");
        if !st.sources_by_name.contains_key(src) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_source",
                format!(
                    "no source named `{src}`; sources: {:?}",
                    st.sources_by_name.keys().collect::<Vec<_>>()
                ),
            ));
        }
        scopes.clear();
    }
    let (rec, secret) = st
        .keys
        .create(
            &n.name,
            n.kind,
            n.source.filter(|_| n.kind == KeyKind::Write),
            scopes,
            n.rate_per_s,
            st.clock.now_ms(),
        )
        .map_err(key_error)?;
    let mut v = rec.view();
    v["secret"] = secret.into();
    Ok((StatusCode::CREATED, axum::Json(v)))
}

async fn rotate(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let (rec, secret) = st.keys.rotate(&id, st.clock.now_ms()).map_err(key_error)?;
    let mut v = rec.view();
    v["secret"] = secret.into();
    Ok(axum::Json(v))
}

async fn revoke(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let rec = st.keys.revoke(&id, st.clock.now_ms()).map_err(key_error)?;
    Ok(axum::Json(rec.view()))
}

async fn audit(
    State(st): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> axum::Json<serde_json::Value> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000usize);
    axum::Json(serde_json::json!({ "entries": st.keys.audit_tail(limit) }))
}

/// Shared for tests of the module.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_of_paths() {
        assert_eq!(scope_for(&Method::GET, "/v1/profiles/1"), Scope::Read);
        assert_eq!(scope_for(&Method::POST, "/v1/segments"), Scope::Write);
        assert_eq!(scope_for(&Method::POST, "/v1/rules/check"), Scope::Read);
        assert_eq!(
            scope_for(&Method::POST, "/v1/privacy/erase"),
            Scope::Privacy
        );
        assert_eq!(
            scope_for(&Method::GET, "/v1/profiles/1/export"),
            Scope::Privacy
        );
        assert_eq!(scope_for(&Method::GET, "/v1/keys"), Scope::Admin);
    }

    #[test]
    fn keys_are_stored_hashed_and_rotate_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keys::open(dir.path(), vec![], 10.0, 0.0).unwrap();
        let (rec, secret) = k
            .create("ci", KeyKind::Admin, None, vec![Scope::Read], None, 5)
            .unwrap();
        let file = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!file.contains(&secret), "the secret must not be stored");
        assert!(file.contains(&rec.hash));
        assert_eq!(k.find(&secret).map(|r| r.id), Some(rec.id.clone()));
        let (_, new) = k.rotate(&rec.id, 6).unwrap();
        assert!(k.find(&secret).is_none(), "the old secret stops working");
        assert!(k.find(&new).is_some());
        // Reopened from the file.
        let k2 = Keys::open(dir.path(), vec![], 10.0, 0.0).unwrap();
        assert!(k2.find(&new).is_some());
        k2.revoke(&rec.id, 7).unwrap();
        assert!(k2.find(&new).is_none());
    }

    #[test]
    fn buckets_refill_on_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keys::open(dir.path(), vec![], 1.0, 0.0).unwrap();
        let (rec, _) = k
            .create("x", KeyKind::Admin, None, vec![Scope::Read], None, 0)
            .unwrap();
        assert!(k.take(&rec, 0).is_ok());
        assert!(k.take(&rec, 0).is_ok());
        assert_eq!(k.take(&rec, 0), Err(1));
        assert!(k.take(&rec, 1000).is_ok());
    }
}
