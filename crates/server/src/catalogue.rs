//! The product catalogue offers consult: price, category and stock per SKU, set through
//! the admin API (`POST /v1/catalogue` with a list of products) and kept in
//! `catalogue.json` in the data directory (written whole, synced, then renamed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use niyet_actions::offer::Product;
use serde_json::{json, Value};

use crate::admin::blocking;
use crate::profiles::bad;
use crate::{ApiError, AppState};

/// Products by SKU.
pub struct Catalogue {
    path: PathBuf,
    products: Mutex<BTreeMap<String, Product>>,
}

impl Catalogue {
    /// Opens the catalogue in `data_dir` (empty if there is none yet).
    pub fn open(data_dir: &std::path::Path) -> Catalogue {
        let path = data_dir.join("catalogue.json");
        let products = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<Product>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.sku.clone(), p))
            .collect();
        Catalogue {
            path,
            products: Mutex::new(products),
        }
    }

    pub fn get(&self, sku: &str) -> Option<Product> {
        self.products.lock().ok()?.get(sku).cloned()
    }

    /// Products of `category` with stock.
    pub fn in_stock(&self, category: &str) -> Vec<Product> {
        self.products
            .lock()
            .map(|m| {
                m.values()
                    .filter(|p| {
                        p.category.as_deref() == Some(category) && p.stock.is_some_and(|s| s > 0)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn all(&self) -> Vec<Product> {
        self.products
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds or replaces products; durable before it returns.
    pub fn upsert(&self, list: Vec<Product>) -> std::io::Result<usize> {
        let mut m = self
            .products
            .lock()
            .map_err(|_| std::io::Error::other("catalogue lock poisoned"))?;
        let n = list.len();
        for p in list {
            m.insert(p.sku.clone(), p);
        }
        let all: Vec<&Product> = m.values().collect();
        crate::write_synced(
            &self.path,
            &serde_json::to_vec(&all).map_err(std::io::Error::other)?,
        )?;
        Ok(n)
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
    let st2 = st.clone();
    let n = blocking(move || {
        st2.catalogue
            .upsert(list)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))
    })
    .await?;
    Ok(Json(json!({"upserted": n})))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/catalogue", get(list).post(upsert))
        .route("/v1/catalogue/{sku}", get(one))
}
