//! Synthetic traffic of an online shop, deterministic for a seed: visitors arrive from
//! campaigns and referrers, search, browse, add to cart, abandon or buy, and come back on
//! another device and log in. Event names follow the Segment e-commerce spec.

use serde_json::{json, Value};

use niyet_model::time::format_rfc3339_millis;

/// splitmix64: small, fast, good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }
}

struct Product {
    sku: &'static str,
    name: &'static str,
    category: &'static str,
    price: f64,
}

const PRODUCTS: &[Product] = &[
    Product {
        sku: "TSH-001",
        name: "Pamuklu Tişört",
        category: "Giyim",
        price: 249.9,
    },
    Product {
        sku: "JKT-014",
        name: "Su Geçirmez Mont",
        category: "Giyim",
        price: 1899.0,
    },
    Product {
        sku: "SNK-220",
        name: "Koşu Ayakkabısı",
        category: "Ayakkabı",
        price: 2349.0,
    },
    Product {
        sku: "BOT-031",
        name: "Deri Bot",
        category: "Ayakkabı",
        price: 3199.0,
    },
    Product {
        sku: "CUP-007",
        name: "Türk Kahvesi Fincan Takımı",
        category: "Ev",
        price: 459.0,
    },
    Product {
        sku: "TEA-102",
        name: "Çaydanlık Seti",
        category: "Ev",
        price: 899.0,
    },
    Product {
        sku: "HDP-330",
        name: "Kablosuz Kulaklık",
        category: "Elektronik",
        price: 1299.0,
    },
    Product {
        sku: "PWR-045",
        name: "Taşınabilir Şarj Cihazı",
        category: "Elektronik",
        price: 549.0,
    },
    Product {
        sku: "BAG-018",
        name: "Sırt Çantası",
        category: "Aksesuar",
        price: 799.0,
    },
    Product {
        sku: "WAT-090",
        name: "Akıllı Saat",
        category: "Elektronik",
        price: 4599.0,
    },
    Product {
        sku: "SCF-012",
        name: "İpek Eşarp",
        category: "Aksesuar",
        price: 689.0,
    },
    Product {
        sku: "TWL-005",
        name: "Pamuk Havlu Seti",
        category: "Ev",
        price: 379.0,
    },
];

const CITIES: &[&str] = &[
    "İstanbul",
    "Ankara",
    "İzmir",
    "Bursa",
    "Antalya",
    "Eskişehir",
];
const SEARCHES: &[&str] = &["mont", "kulaklık", "çanta", "ayakkabı", "fincan", "saat"];

/// Where a visit comes from: (utm source, medium, campaign, referrer).
/// (utm source, medium, campaign), referrer.
type Origin = (
    Option<(&'static str, &'static str, &'static str)>,
    Option<&'static str>,
);

const ORIGINS: &[Origin] = &[
    (
        Some(("google", "cpc", "kis-indirimi")),
        Some("https://www.google.com/"),
    ),
    (
        Some(("facebook", "paid_social", "yeni-sezon")),
        Some("https://m.facebook.com/"),
    ),
    (
        Some(("instagram", "social", "story-kampanya")),
        Some("https://l.instagram.com/"),
    ),
    (Some(("newsletter", "email", "haftalik-bulten")), None),
    (
        Some(("criteo", "display", "retargeting")),
        Some("https://www.criteo.com/"),
    ),
    (None, Some("https://www.google.com/")),
    (None, Some("https://blog.example-moda.com/kis-kombinleri")),
    (None, None),
];

/// A person the simulation may bring back.
#[derive(Debug, Clone)]
struct Customer {
    user_id: String,
    email: String,
    phone: String,
    city: &'static str,
}

/// Produces visits as lists of Segment messages.
pub struct Shop {
    rng: Rng,
    next_visitor: u64,
    known: Vec<Customer>,
    /// Simulated clock of the visits (ms).
    now_ms: i64,
}

impl Shop {
    pub fn new(seed: u64, start_ms: i64) -> Self {
        Self {
            rng: Rng::new(seed),
            next_visitor: 0,
            known: Vec::new(),
            now_ms: start_ms,
        }
    }

    /// Moves the simulated time.
    pub fn set_time(&mut self, ms: i64) {
        self.now_ms = ms;
    }

    /// One visit: every message of it, in order.
    pub fn visit(&mut self) -> Vec<Value> {
        self.next_visitor += 1;
        let n = self.next_visitor;
        let r = &mut self.rng;
        let device = if r.chance(0.6) { "mobile" } else { "desktop" };
        let anon = format!("anon-{n:08x}-{:04x}", r.next_u64() & 0xffff);
        // One in five visits is a known customer on a new device.
        let returning = if !self.known.is_empty() && r.chance(0.2) {
            Some(r.pick(&self.known).clone())
        } else {
            None
        };
        let (utm, referrer) = r.pick(ORIGINS);
        let mut t = self.now_ms;
        let mut msgs = Vec::new();
        let ip = format!("88.{}.{}.{}", r.below(255), r.below(255), 1 + r.below(250));
        let ua = if device == "mobile" {
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
        } else {
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
        };
        let mut context = json!({
            "ip": ip, "userAgent": ua, "locale": "tr-TR", "timezone": "Europe/Istanbul",
            "device": {"type": device},
            "library": {"name": "niyet-demo", "version": env!("CARGO_PKG_VERSION")},
            "page": {"path": "/", "url": "https://shop.example-moda.com/"},
        });
        if let Some((s, m, c)) = utm {
            context["campaign"] = json!({"source": s, "medium": m, "name": c});
        }
        if let Some(refr) = referrer {
            context["page"]["referrer"] = json!(refr);
        }
        let user = std::cell::RefCell::new(None::<String>);
        let push = |msgs: &mut Vec<Value>, mut m: Value, t: &mut i64, r: &mut Rng| {
            *t += 2_000 + r.below(40_000) as i64;
            m["anonymousId"] = json!(anon);
            if let Some(u) = user.borrow().as_ref() {
                m["userId"] = json!(u);
            }
            m["context"] = context.clone();
            m["timestamp"] = json!(format_rfc3339_millis(*t));
            m["messageId"] = json!(format!("demo-{n}-{}", msgs.len()));
            msgs.push(m);
        };
        push(
            &mut msgs,
            json!({"type": "page", "name": "Home", "properties": {"path": "/"}}),
            &mut t,
            r,
        );
        if let Some(c) = &returning {
            *user.borrow_mut() = Some(c.user_id.clone());
            push(
                &mut msgs,
                json!({"type": "identify", "traits": {"email": c.email, "phone": c.phone, "city": c.city}}),
                &mut t,
                r,
            );
        }
        if r.chance(0.35) {
            let q = *r.pick(SEARCHES);
            push(
                &mut msgs,
                json!({"type": "track", "event": "Products Searched", "properties": {"query": q}}),
                &mut t,
                r,
            );
        }
        let views = 1 + r.below(4);
        let mut viewed = Vec::new();
        for _ in 0..views {
            let p = r.pick(PRODUCTS);
            viewed.push(p);
            push(
                &mut msgs,
                json!({"type": "track", "event": "Product Viewed", "properties": {
                "product_id": p.sku, "name": p.name, "category": p.category, "price": p.price, "currency": "TRY"}}),
                &mut t,
                r,
            );
        }
        if r.chance(0.45) {
            let p = *r.pick(&viewed);
            let qty = 1 + r.below(2);
            push(
                &mut msgs,
                json!({"type": "track", "event": "Product Added", "properties": {
                "product_id": p.sku, "name": p.name, "category": p.category, "price": p.price, "quantity": qty, "currency": "TRY"}}),
                &mut t,
                r,
            );
            if r.chance(0.55) {
                push(
                    &mut msgs,
                    json!({"type": "track", "event": "Checkout Started", "properties": {"value": p.price * qty as f64, "currency": "TRY"}}),
                    &mut t,
                    r,
                );
                if r.chance(0.65) {
                    let c = match &returning {
                        Some(c) => c.clone(),
                        None => {
                            let c = Customer {
                                user_id: format!("cust-{n:06}"),
                                email: format!("musteri{n}@example-mail.com"),
                                phone: format!(
                                    "+90 5{:02} {:03} {:04}",
                                    30 + r.below(20),
                                    r.below(1000),
                                    r.below(10_000)
                                ),
                                city: CITIES[r.below(CITIES.len())],
                            };
                            *user.borrow_mut() = Some(c.user_id.clone());
                            push(
                                &mut msgs,
                                json!({"type": "identify", "traits": {"email": c.email, "phone": c.phone, "city": c.city, "gender": if r.chance(0.5) {"f"} else {"m"}, "age": 18 + r.below(50)}}),
                                &mut t,
                                r,
                            );
                            self.known.push(c.clone());
                            c
                        }
                    };
                    let coupon = if r.chance(0.3) { Some("KIS20") } else { None };
                    let revenue = p.price * qty as f64 * if coupon.is_some() { 0.8 } else { 1.0 };
                    push(
                        &mut msgs,
                        json!({"type": "track", "event": "Order Completed", "properties": {
                        "order_id": format!("ORD-{n:07}"), "revenue": (revenue * 100.0).round() / 100.0, "currency": "TRY",
                        "coupon": coupon, "products": [{"product_id": p.sku, "category": p.category, "price": p.price, "quantity": qty}],
                        "customer": c.user_id}}),
                        &mut t,
                        r,
                    );
                }
            }
        }
        // A little broken traffic, so the quarantine has something to show.
        if r.chance(0.02) {
            msgs.push(json!({"type": "track", "event": "Product Viewed", "properties": {"product_id": "TSH-001"},
                "messageId": format!("demo-{n}-broken")}));
        }
        msgs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_are_deterministic_and_well_formed() {
        let run = || {
            let mut s = Shop::new(7, 1_700_000_000_000);
            (0..200).flat_map(|_| s.visit()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run(), "same seed, same traffic");
        let names: std::collections::HashSet<&str> =
            a.iter().filter_map(|m| m["event"].as_str()).collect();
        for want in [
            "Product Viewed",
            "Product Added",
            "Checkout Started",
            "Order Completed",
        ] {
            assert!(names.contains(want), "{want} missing");
        }
        assert!(a.iter().any(|m| m["type"] == "identify"));
        assert!(a
            .iter()
            .any(|m| m["context"]["campaign"]["medium"] == "cpc"));
        let ids: std::collections::HashSet<&str> =
            a.iter().filter_map(|m| m["messageId"].as_str()).collect();
        assert_eq!(ids.len(), a.len(), "message ids are unique");
    }
}
