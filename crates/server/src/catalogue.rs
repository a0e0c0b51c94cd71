//! The product catalogue offers consult: price, category and stock per SKU. It lives in
//! the pipeline, derived from the log: `Product Updated` / `Inventory Updated` events
//! (`[profiles] catalogue_events`) and `POST /v1/catalogue` (a list of products, written
//! to the log as an admin record) upsert products; snapshots keep it. A `catalogue.json`
//! left by an earlier version is imported through the log once at start.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use niyet_actions::offer::Product;
use niyet_pipeline::Pipeline;
use serde_json::{json, Value};

use crate::admin::blocking;
use crate::profiles::bad;
use crate::{ApiError, AppState};

/// Products by SKU, read from the pipeline once it runs.
pub struct Catalogue {
    legacy: PathBuf,
    pipeline: OnceLock<Arc<Pipeline>>,
}

impl Catalogue {
    pub fn new(data_dir: &std::path::Path) -> Catalogue {
        Catalogue {
            legacy: data_dir.join("catalogue.json"),
            pipeline: OnceLock::new(),
        }
    }

    /// Connects the running pipeline; imports a `catalogue.json` of an earlier version
    /// through the log (then renames it `catalogue.json.imported`).
    pub fn attach(&self, p: Arc<Pipeline>, now_ms: i64) -> std::io::Result<()> {
        let _ = self.pipeline.set(p.clone());
        let Ok(bytes) = std::fs::read(&self.legacy) else {
            return Ok(());
        };
        let list: Vec<Product> = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        p.upsert_products(&list, now_ms, Duration::from_secs(60))
            .map_err(std::io::Error::other)?;
        std::fs::rename(&self.legacy, self.legacy.with_extension("json.imported"))?;
        tracing::info!(
            products = list.len(),
            "catalogue.json imported into the log"
        );
        Ok(())
    }

    fn pipeline(&self) -> Option<&Arc<Pipeline>> {
        self.pipeline.get()
    }

    pub fn get(&self, sku: &str) -> Option<Product> {
        self.pipeline()?.product(sku)
    }

    /// Products of `category` with stock.
    pub fn in_stock(&self, category: &str) -> Vec<Product> {
        self.pipeline()
            .map(|p| p.in_stock(category))
            .unwrap_or_default()
    }

    pub fn all(&self) -> Vec<Product> {
        self.pipeline().map(|p| p.products()).unwrap_or_default()
    }
}

async fn list(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"products": st.catalogue.all()})))
}

async fn one(
    State(st): State<Arc<AppState>>,
    Path(sku): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.catalogue
        .get(&sku)
        .map(|p| Json(json!(p)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "product_not_found",
                format!("no product has SKU `{sku}`"),
            )
        })
}

async fn upsert(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let list: Vec<Product> = serde_json::from_slice(&body).map_err(|e| {
        bad(
            "invalid_body",
            format!("expected a list of products {{sku, price, category, stock}}: {e}"),
        )
    })?;
    if let Some(p) = list
        .iter()
        .find(|p| p.sku.trim().is_empty() || !p.price.is_finite() || p.price < 0.0)
    {
        return Err(bad(
            "invalid_product",
            format!("product `{}`: needs a SKU and a price of 0 or more", p.sku),
        ));
    }
    let n = list.len();
    blocking(move || {
        st.pipeline
            .upsert_products(&list, st.clock.now_ms(), Duration::from_secs(30))
            .map_err(crate::profiles::pipeline_error)
    })
    .await?;
    Ok(Json(json!({"upserted": n})))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/catalogue", get(list).post(upsert))
        .route("/v1/catalogue/{sku}", get(one))
}
