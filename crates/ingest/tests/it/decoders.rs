//! Random and mutated bodies never panic the decoders, and every refusal
//! names its record and a field.

use braid_core::Limits;
use braid_ingest::decode::{Format, RecordRef, decode_body};
use braid_ingest::line_protocol::Precision;
use proptest::prelude::*;

const GOOD_JSON: &str = r#"[{"device_id":"a","metric":"m","ts":1000,"value":1.5,"seq":1,"tags":{"k":"v"}},{"device_id":"b","metric":"m","ts":"1970-01-01T00:00:02Z","value":-2}]"#;
const GOOD_LP: &str =
    "m,device_id=a,k=v value=1.5,other=2i 1000000000\ncpu,host=h usage=3 2000000000\n";

fn mutate(base: &str, edits: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for (at, byte) in edits {
        let i = at.index(b.len());
        match byte % 3 {
            0 => b[i] = *byte,
            1 => {
                b.remove(i);
            }
            _ => b.insert(i, *byte),
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

fn check(format: Format, body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(d) = decode_body(format, body, 0, &Limits::default()) {
        for r in &d.rejected {
            prop_assert!(!r.field.is_empty(), "a refusal without a field: {:?}", r);
            prop_assert!(!r.reason.is_empty());
            if let RecordRef::Line(n) = r.record {
                prop_assert!(n >= 1);
            }
        }
        for r in &d.readings {
            prop_assert!(r.value.is_finite());
            prop_assert!(!r.device_id.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn mutated_json_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let body = mutate(GOOD_JSON, &edits);
        check(Format::Json, &body)?;
        check(Format::Ndjson, &body)?;
    }

    #[test]
    fn mutated_line_protocol_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let body = mutate(GOOD_LP, &edits);
        check(Format::LineProtocol(Precision::Nanoseconds), &body)?;
    }

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        check(Format::Json, &body)?;
        check(Format::Ndjson, &body)?;
        check(Format::LineProtocol(Precision::Seconds), &body)?;
    }
}

/// One gateway for every case of the HTTP property test, on its own
/// runtime, over the embedded broker.
fn gateway_url() -> &'static str {
    use std::sync::OnceLock;
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let broker = braid_testkit::memory_broker().await;
                let gw = crate::default_gateway(&broker.brokers()).await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(format!("http://{}", listener.local_addr().unwrap()))
                    .unwrap();
                warp::serve(braid_ingest::gateway::filters::routes(gw))
                    .incoming(listener)
                    .run()
                    .await;
                drop(broker);
            });
        });
        rx.recv().unwrap()
    })
}

/// Posts `body` and checks the answer: never a 5xx, and a refusal names
/// its record (`record N` or `line N`) and field.
fn post_checked(
    path: &str,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> Result<(), TestCaseError> {
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}{path}", gateway_url()))
        .header("content-type", content_type);
    let body = if gzip {
        use std::io::Write;
        req = req.header("content-encoding", "gzip");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).unwrap();
        gz.finish().unwrap()
    } else {
        body
    };
    let r = req.body(body).send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    prop_assert!(status < 500, "{path}: {status}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if status == 400 && v.get("record").is_some() {
        let e = v["error"].as_str().unwrap_or("");
        prop_assert!(e.starts_with("record ") || e.starts_with("line "), "{e}");
        prop_assert!(e.contains("field `"), "{e}");
    }
    if status == 422 {
        for r in v["rejected"].as_array().into_iter().flatten() {
            prop_assert!(r["field"].as_str().is_some_and(|f| !f.is_empty()), "{r}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Over real HTTP against the embedded broker: random and mutated
    /// bodies, content types, gzip and `accept_partial` never give a 5xx,
    /// and every refusal names its record and field.
    #[test]
    fn mutated_bodies_over_http_never_give_a_5xx(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        which in 0u8..4,
        partial in any::<bool>(),
        gzip in any::<bool>(),
        random in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let q = if partial { "?accept_partial=true" } else { "" };
        match which {
            0 => post_checked(&format!("/v1/readings{q}"), "application/json", gzip, mutate(GOOD_JSON, &edits))?,
            1 => post_checked(&format!("/v1/readings{q}"), "application/x-ndjson", gzip, mutate(GOOD_JSON, &edits))?,
            2 => post_checked(&format!("/v1/write?precision=ns{}", q.replace('?', "&")), "text/plain", gzip, mutate(GOOD_LP, &edits))?,
            _ => post_checked(&format!("/v1/readings{q}"), "application/json", gzip, random)?,
        }
    }
}
