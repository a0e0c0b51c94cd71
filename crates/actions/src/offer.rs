//! The cart-abandonment offer: a discount code, free shipping, an in-stock alternative or
//! nothing, chosen from the customer's history and the stock of the cart's items, with
//! the reasons. Pure.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// A product as the catalogue knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub price: f64,
    #[serde(default)]
    pub category: Option<String>,
    /// Units in stock; unknown: `None`.
    #[serde(default)]
    pub stock: Option<i64>,
}

/// What the customer's history says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub orders: u32,
    /// Orders placed with a coupon.
    pub coupon_orders: u32,
    pub average_basket: f64,
    /// Predicted lifetime value, if known.
    pub lifetime_value: Option<f64>,
}

/// How offers are chosen (`[offers]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The discount offered to price-sensitive customers.
    pub discount_percent: f64,
    /// A customer with at least this share of orders on a coupon (and two orders) is
    /// price sensitive.
    pub price_sensitive_share: f64,
    /// Items with this many units or fewer need no incentive (scarcity does the work).
    pub low_stock: i64,
    /// Carts below this value get free shipping.
    pub free_shipping_below: f64,
    /// Customers worth at least this much get free shipping whatever the cart.
    pub valuable_customer: f64,
    /// Prefix of the single-use codes.
    pub code_prefix: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            discount_percent: 10.0,
            price_sensitive_share: 0.5,
            low_stock: 5,
            free_shipping_below: 500.0,
            valuable_customer: 5_000.0,
            code_prefix: "NIYET".into(),
        }
    }
}

/// The offer made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Offer {
    Discount {
        percent: f64,
        code: String,
    },
    FreeShipping,
    /// The cart holds `instead_of`, out of stock; `sku` is in stock in its category.
    Alternative {
        sku: String,
        instead_of: String,
    },
    Nothing,
}

/// An offer with why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub offer: Offer,
    pub reasons: Vec<String>,
}

/// A single-use code derived from the action's idempotency key: the same action always
/// gets the same code, two actions never share one (but for a 1 in 2^50 collision).
pub fn coupon_code(prefix: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut h = xxh3_64(key.as_bytes());
    let mut code = String::with_capacity(prefix.len() + 11);
    code.push_str(prefix);
    code.push('-');
    for _ in 0..10 {
        code.push(ALPHABET[(h & 31) as usize] as char);
        h >>= 5;
    }
    code
}

/// Chooses the offer for a cart of `(product, quantity)`; `in_stock` lists products of
/// the catalogue with stock, for alternatives.
pub fn decide(
    cart: &[(Product, u32)],
    in_stock: &[Product],
    h: &History,
    p: &Policy,
    key: &str,
) -> Decision {
    let mut reasons = Vec::new();
    // Out of stock: suggest the in-stock product of the same category closest in price.
    if let Some((gone, _)) = cart.iter().find(|(x, _)| x.stock == Some(0)) {
        reasons.push(format!("{} is out of stock", gone.sku));
        let alt = in_stock
            .iter()
            .filter(|x| {
                x.sku != gone.sku
                    && x.stock.is_some_and(|s| s > 0)
                    && x.category.is_some()
                    && x.category == gone.category
            })
            .min_by(|a, b| {
                (a.price - gone.price)
                    .abs()
                    .total_cmp(&(b.price - gone.price).abs())
                    .then_with(|| a.sku.cmp(&b.sku))
            });
        if let Some(alt) = alt {
            reasons.push(format!(
                "{} is in stock in the same category ({}) at {}",
                alt.sku,
                alt.category.as_deref().unwrap_or_default(),
                alt.price
            ));
            return Decision {
                offer: Offer::Alternative {
                    sku: alt.sku.clone(),
                    instead_of: gone.sku.clone(),
                },
                reasons,
            };
        }
        reasons.push("nothing in its category is in stock".into());
    }
    if let Some((low, _)) = cart
        .iter()
        .find(|(x, _)| x.stock.is_some_and(|s| s > 0 && s <= p.low_stock))
    {
        reasons.push(format!(
            "{} has only {} left: no incentive needed",
            low.sku,
            low.stock.unwrap_or_default()
        ));
        return Decision {
            offer: Offer::Nothing,
            reasons,
        };
    }
    let basket: f64 = cart.iter().map(|(x, q)| x.price * f64::from(*q)).sum();
    let share = if h.orders > 0 {
        f64::from(h.coupon_orders) / f64::from(h.orders)
    } else {
        0.0
    };
    if h.orders >= 2 && share >= p.price_sensitive_share {
        reasons.push(format!(
            "price sensitive: {} of {} orders used a coupon",
            h.coupon_orders, h.orders
        ));
        return Decision {
            offer: Offer::Discount {
                percent: p.discount_percent,
                code: coupon_code(&p.code_prefix, key),
            },
            reasons,
        };
    }
    if let Some(v) = h.lifetime_value.filter(|v| *v >= p.valuable_customer) {
        reasons.push(format!("valuable customer (lifetime value {v:.0})"));
        return Decision {
            offer: Offer::FreeShipping,
            reasons,
        };
    }
    if basket < p.free_shipping_below {
        reasons.push(format!(
            "basket {basket:.2} is below {:.2}: shipping weighs",
            p.free_shipping_below
        ));
        return Decision {
            offer: Offer::FreeShipping,
            reasons,
        };
    }
    reasons.push(format!(
        "basket {basket:.2}, {} orders, {:.0} % with a coupon: no incentive",
        h.orders,
        share * 100.0
    ));
    Decision {
        offer: Offer::Nothing,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, price: f64, cat: &str, stock: i64) -> Product {
        Product {
            sku: sku.into(),
            price,
            category: Some(cat.into()),
            stock: Some(stock),
        }
    }

    #[test]
    fn stock_comes_first() {
        let p = Policy::default();
        let sensitive = History {
            orders: 4,
            coupon_orders: 3,
            average_basket: 200.0,
            lifetime_value: None,
        };
        let shoes = item("S1", 900.0, "shoes", 0);
        let others = [
            item("S2", 400.0, "shoes", 10),
            item("S3", 950.0, "shoes", 3),
            item("B1", 900.0, "bags", 50),
        ];
        let d = decide(&[(shoes.clone(), 1)], &others, &sensitive, &p, "k");
        assert_eq!(
            d.offer,
            Offer::Alternative {
                sku: "S3".into(),
                instead_of: "S1".into()
            }
        );
        assert!(d.reasons[0].contains("out of stock"));
        // Low stock: no discount even for a price-sensitive customer.
        let d = decide(
            &[(item("S3", 950.0, "shoes", 3), 1)],
            &others,
            &sensitive,
            &p,
            "k",
        );
        assert_eq!(d.offer, Offer::Nothing);
        assert!(d.reasons[0].contains("only 3 left"), "{:?}", d.reasons);
    }

    #[test]
    fn history_chooses_between_discount_and_free_shipping() {
        let p = Policy::default();
        let cart = [(item("S2", 400.0, "shoes", 10), 1)];
        let sensitive = History {
            orders: 4,
            coupon_orders: 2,
            average_basket: 200.0,
            lifetime_value: None,
        };
        let d = decide(&cart, &[], &sensitive, &p, "key-1");
        let Offer::Discount { percent, code } = &d.offer else {
            panic!("{d:?}")
        };
        assert_eq!(*percent, 10.0);
        assert_eq!(code, &coupon_code("NIYET", "key-1"));
        assert_ne!(code, &coupon_code("NIYET", "key-2"));
        assert_eq!(code.len(), "NIYET-".len() + 10);
        let loyal = History {
            orders: 5,
            coupon_orders: 0,
            average_basket: 300.0,
            lifetime_value: Some(100.0),
        };
        assert_eq!(
            decide(&cart, &[], &loyal, &p, "k").offer,
            Offer::FreeShipping
        );
        let big = [(item("S2", 400.0, "shoes", 10), 2)];
        assert_eq!(decide(&big, &[], &loyal, &p, "k").offer, Offer::Nothing);
        let valuable = History {
            lifetime_value: Some(9_000.0),
            ..loyal
        };
        assert_eq!(
            decide(&big, &[], &valuable, &p, "k").offer,
            Offer::FreeShipping
        );
    }

    #[test]
    fn codes_are_distinct_over_many_keys() {
        let codes: std::collections::HashSet<String> = (0..100_000)
            .map(|i| coupon_code("X", &format!("{i:032x}")))
            .collect();
        assert_eq!(codes.len(), 100_000);
    }
}
