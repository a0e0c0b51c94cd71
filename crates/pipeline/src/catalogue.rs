//! The product catalogue, derived from the log like the rest of the state: events named in
//! [`crate::PipelineConfig::catalogue_events`] (`Product Updated`, `Inventory Updated`)
//! and `niyet.catalogue` admin records (`POST /v1/catalogue`) upsert products by SKU, in
//! log order. An event sets what it carries (`price`, `category`, `stock` or `inventory`)
//! and leaves the rest as it was, so a stock feed and a price feed can be separate.
//! Kept in snapshots, rebuilt by replay.

use std::collections::BTreeMap;
use std::time::Duration;

use niyet_actions::offer::Product;
use serde_json::Value;

use crate::{Pipeline, PipelineError};

/// Products by SKU.
pub(crate) type Catalogue = BTreeMap<String, Product>;

/// Text of a SKU property: strings as they are, numbers as written.
fn sku_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Merges an event's properties into the catalogue; false when they name no SKU.
pub(crate) fn apply_event(cat: &mut Catalogue, props: &Value) -> bool {
    let Some(sku) = props
        .get("sku")
        .and_then(sku_of)
        .or_else(|| props.get("product_id").and_then(sku_of))
    else {
        return false;
    };
    let p = cat.entry(sku.clone()).or_insert_with(|| Product {
        sku,
        price: 0.0,
        category: None,
        stock: None,
    });
    if let Some(price) = props
        .get("price")
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite() && *x >= 0.0)
    {
        p.price = price;
    }
    if let Some(c) = props.get("category").and_then(Value::as_str) {
        p.category = Some(c.to_string());
    }
    if let Some(s) = props
        .get("stock")
        .or_else(|| props.get("inventory"))
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
    {
        p.stock = Some(s.floor() as i64);
    }
    true
}

/// Applies a `niyet.catalogue` record: its products replace those of the same SKU.
pub(crate) fn apply_admin(cat: &mut Catalogue, payload: &[u8]) -> Result<Value, String> {
    #[derive(serde::Deserialize)]
    struct Rec {
        products: Vec<Product>,
    }
    let r: Rec = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let n = r.products.len();
    for p in r.products {
        cat.insert(p.sku.clone(), p);
    }
    Ok(serde_json::json!({"upserted": n}))
}

impl Pipeline {
    /// The product with this SKU.
    pub fn product(&self, sku: &str) -> Option<Product> {
        self.shared.catalogue.read().ok()?.get(sku).cloned()
    }

    /// Every product, by SKU.
    pub fn products(&self) -> Vec<Product> {
        self.shared
            .catalogue
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Products of `category` with stock.
    pub fn in_stock(&self, category: &str) -> Vec<Product> {
        self.shared
            .catalogue
            .read()
            .map(|c| {
                c.values()
                    .filter(|p| {
                        p.category.as_deref() == Some(category) && p.stock.is_some_and(|s| s > 0)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds or replaces products through the log; returns once they are in force.
    pub fn upsert_products(
        &self,
        products: &[Product],
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Value, PipelineError> {
        self.act(
            serde_json::json!({"type": "niyet.catalogue", "products": products}),
            now_ms,
            timeout,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_set_what_they_carry_and_keep_the_rest() {
        let mut c = Catalogue::new();
        assert!(apply_event(
            &mut c,
            &json!({"sku": "S1", "price": 120.5, "category": "shoes", "stock": 4})
        ));
        assert!(apply_event(
            &mut c,
            &json!({"product_id": "S1", "inventory": 0})
        ));
        assert!(apply_event(
            &mut c,
            &json!({"product_id": 77, "price": -3, "stock": 2.9})
        ));
        assert!(!apply_event(&mut c, &json!({"price": 10})));
        assert!(!apply_event(&mut c, &json!({"sku": "  "})));
        let s1 = &c["S1"];
        assert_eq!(
            (s1.price, s1.category.as_deref(), s1.stock),
            (120.5, Some("shoes"), Some(0))
        );
        // A negative price is ignored; stock is whole units.
        let s77 = &c["77"];
        assert_eq!((s77.price, s77.stock), (0.0, Some(2)));
        let out = apply_admin(
            &mut c,
            br#"{"products": [{"sku": "S1", "price": 99.0, "stock": 7}]}"#,
        )
        .unwrap();
        assert_eq!(out["upserted"], 1);
        assert_eq!(
            c["S1"].category, None,
            "an admin record replaces the product"
        );
        assert!(apply_admin(&mut c, b"{}").is_err());
    }
}
