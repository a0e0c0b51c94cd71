//! `niyet keys …` and `niyet privacy …`: key management and privacy requests against a
//! running server, through its admin API.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Where the server is and the token to use.
#[derive(Debug, Clone, Args)]
pub struct Admin {
    /// Server URL.
    #[arg(long, env = "NIYET_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token (with the `admin` scope for keys, `privacy` for privacy requests).
    #[arg(long, env = "NIYET_ADMIN_TOKEN")]
    pub admin_token: String,
}

impl Admin {
    /// Calls the admin API; a non-2xx answer becomes an error with its code and message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        let mut r = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r
            .send()
            .await
            .with_context(|| format!("requesting {url}"))?;
        let status = r.status();
        let v: Value = r.json().await.with_context(|| format!("reading {url}"))?;
        if !status.is_success() {
            bail!(
                "{} {}: {}",
                status.as_u16(),
                v["code"].as_str().unwrap_or("error"),
                v["message"].as_str().unwrap_or("request failed")
            );
        }
        Ok(v)
    }
}

/// `niyet keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Create a write key for a source, or an admin token with scopes; prints the secret
    /// once.
    Create {
        /// A name for people.
        name: String,
        /// `write` (ingest only) or `admin`.
        #[arg(long, default_value = "admin")]
        kind: String,
        /// The source of a write key.
        #[arg(long)]
        source: Option<String>,
        /// Scopes of an admin token: read, write, privacy, admin (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// Requests per second (burst: twice that).
        #[arg(long)]
        rate_per_s: Option<f64>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Give a key a new secret (the old one stops working); prints the new secret.
    Rotate {
        /// The key's id (`key_…`).
        id: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Revoke a key for good.
    Revoke {
        /// The key's id (`key_…`).
        id: String,
        #[command(flatten)]
        admin: Admin,
    },
}

/// Runs `niyet keys`.
pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let v = match cmd {
        KeysCommand::List { admin } => admin.call(Method::GET, "/v1/keys", None).await?,
        KeysCommand::Create {
            name,
            kind,
            source,
            scope,
            rate_per_s,
            admin,
        } => {
            let body = json!({"name": name, "kind": kind, "source": source,
                "scopes": scope, "rate_per_s": rate_per_s});
            admin.call(Method::POST, "/v1/keys", Some(body)).await?
        }
        KeysCommand::Rotate { id, admin } => {
            admin
                .call(Method::POST, &format!("/v1/keys/{id}/rotate"), None)
                .await?
        }
        KeysCommand::Revoke { id, admin } => {
            admin
                .call(Method::DELETE, &format!("/v1/keys/{id}"), None)
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `niyet privacy …`
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Erase a person (right to be forgotten): profile, events, snapshots, quarantined
    /// messages, delivery records; by default later events with their identifiers are
    /// dropped too.
    Erase {
        /// `TYPE:VALUE` (`email:ayse@example.com`, `phone:+90…`, `user_id:42`, …) or a
        /// profile id (`p_12`).
        identifier: String,
        /// Erase only what is held now; do not drop later events.
        #[arg(long)]
        delete_only: bool,
        #[command(flatten)]
        admin: Admin,
    },
    /// Everything held about a person, as one JSON document (right of access).
    Export {
        /// `TYPE:VALUE` or a profile id.
        identifier: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Show a profile's consent, or set it: `--set email=granted --set sms=denied`.
    Consent {
        /// `TYPE:VALUE` or a profile id.
        identifier: String,
        /// `PURPOSE=granted|denied`.
        #[arg(long)]
        set: Vec<String>,
        #[command(flatten)]
        admin: Admin,
    },
}

/// The profile id an identifier belongs to.
pub async fn profile_of(admin: &Admin, identifier: &str) -> anyhow::Result<String> {
    match crate::profile::query_for(identifier) {
        (id, None) => Ok(id),
        (kind, Some(value)) => {
            let q = format!("/v1/profiles?{kind}={}", url_escape(&value));
            let v = admin.call(reqwest::Method::GET, &q, None).await?;
            v["id"]
                .as_str()
                .map(str::to_string)
                .context("the answer has no profile id")
        }
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `niyet privacy`.
pub async fn run_privacy(cmd: PrivacyCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let v = match cmd {
        PrivacyCommand::Erase {
            identifier,
            delete_only,
            admin,
        } => {
            let (kind, value) = match crate::profile::query_for(&identifier) {
                (id, None) => ("profile".to_string(), id),
                (k, Some(v)) => (k, v),
            };
            let mode = if delete_only { "delete" } else { "suppress" };
            admin
                .call(
                    Method::POST,
                    "/v1/privacy/erase",
                    Some(json!({ kind: value, "mode": mode })),
                )
                .await?
        }
        PrivacyCommand::Export { identifier, admin } => {
            let id = profile_of(&admin, &identifier).await?;
            admin
                .call(Method::GET, &format!("/v1/profiles/{id}/export"), None)
                .await?
        }
        PrivacyCommand::Consent {
            identifier,
            set,
            admin,
        } => {
            let id = profile_of(&admin, &identifier).await?;
            let path = format!("/v1/profiles/{id}/consent");
            if set.is_empty() {
                admin.call(Method::GET, &path, None).await?
            } else {
                let mut body = serde_json::Map::new();
                for s in &set {
                    let (p, st) = s
                        .split_once('=')
                        .with_context(|| format!("`{s}`: expected PURPOSE=granted|denied"))?;
                    body.insert(p.to_string(), json!(st));
                }
                admin
                    .call(Method::POST, &path, Some(Value::Object(body)))
                    .await?
            }
        }
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
