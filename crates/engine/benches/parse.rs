//! Reading stored events, which the router does for every record:
//! `cargo bench -p niyet-engine --bench parse`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use niyet_engine::extract;

/// Stored events in the form ingest writes them: a product view from a browser, an order
/// from a mobile app, an identify with traits.
fn events() -> Vec<Vec<u8>> {
    [
        r#"{"type":"track","event":"Product Viewed","userId":"u-81723","anonymousId":"3f1c9a2e-5b7d-4e0a-9c61-2d8f7b4a1e90","messageId":"m-5c0e2f7a-91d4-4b63-8a2e-0f6d3c9b7e15","timestamp":"2026-12-06T09:41:27.118Z","receivedAt":"2026-12-06T09:41:27.204Z","sentAt":"2026-12-06T09:41:27.190Z","originalTimestamp":"2026-12-06T09:41:27.104Z","source":"web","context":{"library":{"name":"analytics.js","version":"4.1.0"},"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","ip":"85.105.23.117","locale":"tr-TR","timezone":"Europe/Istanbul","page":{"path":"/urun/k-1042","url":"https://magaza.example/urun/k-1042?utm_source=newsletter","title":"Deri çanta – Mağaza","referrer":"https://magaza.example/kategori/canta"},"campaign":{"source":"newsletter","medium":"email","name":"kis-indirimi"},"screen":{"width":1512,"height":982},"traits":{"email":"ayse.yilmaz@example.com"}},"properties":{"sku":"K-1042","product_id":"p-1042","name":"Deri çanta","category":"Çanta","price":1899.9,"currency":"TRY","quantity":1}}"#,
        r#"{"type":"track","event":"Order Completed","userId":"u-20931","anonymousId":"b7e4d1c0-2a9f-4f38-b6e5-71c0d3a8e246","messageId":"m-0a7d4c1e-6f2b-4e95-bd30-8c1f5a2e7d64","timestamp":"2026-12-06T09:41:28.512Z","receivedAt":"2026-12-06T09:41:28.600Z","source":"app","context":{"app":{"name":"Mağaza","version":"5.12.0","build":"5120"},"device":{"id":"d-6f1a2b3c","type":"ios","model":"iPhone15,2"},"os":{"name":"iOS","version":"18.1"},"ip":"78.186.4.90","locale":"tr-TR","timezone":"Europe/Istanbul","network":{"wifi":true},"traits":{"phone":"+90 532 123 45 67"}},"properties":{"order_id":"o-77120","revenue":2349.5,"currency":"TRY","coupon":"KIS10","products":[{"sku":"K-1042","price":1899.9,"quantity":1},{"sku":"A-3310","price":449.6,"quantity":1}]}}"#,
        r#"{"type":"identify","userId":"u-81723","anonymousId":"3f1c9a2e-5b7d-4e0a-9c61-2d8f7b4a1e90","messageId":"m-9e2b7c4d-1a0f-4d86-a5b3-6c2e8f1d0a97","timestamp":"2026-12-06T09:41:30.001Z","receivedAt":"2026-12-06T09:41:30.050Z","source":"web","traits":{"email":"ayse.yilmaz@example.com","firstName":"Ayşe","lastName":"Yılmaz","city":"İzmir","gender":"f","birthday":"1991-04-12","plan":"gold"},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"85.105.23.117","userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn parse(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("stored_event");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in &evs {
                let v = extract::parse(std::hint::black_box(e)).expect("stored event");
                n += v.traits.0.len() + usize::from(v.properties.is_some());
            }
            n
        })
    });
    g.bench_function("parse_for_features", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in &evs {
                let v = extract::parse_for_features(std::hint::black_box(e)).expect("stored");
                n += usize::from(v.properties.is_some());
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
