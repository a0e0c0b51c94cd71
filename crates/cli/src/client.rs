//! A small HTTP client for the tools that talk to a running server.

use std::time::Duration;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

/// Ingest client bound to one server and write key.
#[derive(Clone)]
pub struct IngestClient {
    http: reqwest::Client,
    base: String,
    auth: String,
}

/// The server's answer to a batch.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct BatchAnswer {
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub quarantined: u64,
    #[serde(default)]
    pub rejected: u64,
}

fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

impl IngestClient {
    pub fn new(base: &str, write_key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth: basic(write_key),
        })
    }

    /// Posts a body to `path`; returns the status and body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, bytes_body::Body)> {
        let r = self
            .http
            .post(format!("{}{}", self.base, path))
            .header(AUTHORIZATION, &self.auth)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = r.bytes().await?;
        Ok((
            status,
            bytes_body::Body {
                bytes: bytes.to_vec(),
                retry_after,
            },
        ))
    }

    /// Posts a batch, retrying on 429/5xx and connection errors (same body, so the
    /// messageIds deduplicate). Gives up after `attempts`.
    pub async fn batch_with_retry(
        &self,
        body: Vec<u8>,
        attempts: u32,
    ) -> anyhow::Result<Result<BatchAnswer, String>> {
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..attempts {
            match self.post("/v1/batch", body.clone()).await {
                Ok((200, b)) => {
                    return Ok(Ok(serde_json::from_slice(&b.bytes).unwrap_or_default()))
                }
                Ok((s, b)) if s == 429 || s >= 500 => {
                    last = format!("HTTP {s}: {}", String::from_utf8_lossy(&b.bytes));
                    if let Some(ra) = b.retry_after {
                        delay = Duration::from_secs(ra);
                    }
                }
                Ok((s, b)) => {
                    return Ok(Err(format!(
                        "HTTP {s}: {}",
                        String::from_utf8_lossy(&b.bytes)
                    )))
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        anyhow::bail!("giving up after {attempts} attempts: {last}")
    }
}

pub mod bytes_body {
    /// A response body with the `Retry-After` it came with.
    pub struct Body {
        pub bytes: Vec<u8>,
        pub retry_after: Option<u64>,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_auth_encodes_key_and_empty_password() {
        assert_eq!(super::basic("abc"), "Basic YWJjOg==");
        assert_eq!(super::basic("ab"), "Basic YWI6");
        assert_eq!(super::basic("abcd"), "Basic YWJjZDo=");
    }
}
