//! A real third-party Go program from a package registry: Debian's gojq 0.12.11, a
//! stripped Go 1.19 build nobody here compiled, decoding a JSON document of known shape.
//! Its `encoding/json` makes one map per JSON object and assigns each key once, so the
//! input is the truth. map-trace must count those maps and assigns exactly, name their
//! site, fit its summary in 120 lines, lose nothing, and leave gojq's output unchanged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{path::PathBuf, process::Command, time::Duration};

use integration_tests::{Tracer, map_trace_bin, read_csv};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_mins(4);

/// Objects at the top level; each has one more object inside (`tags`).
const OBJECTS: u64 = 5_000;

/// The function that makes a map per JSON object and assigns its keys.
const DECODER: &str = "encoding/json.(*decodeState).objectInterface";

fn gojq() -> PathBuf {
    std::env::var_os("MAP_TRACE_GOJQ")
        .map(PathBuf::from)
        .expect("MAP_TRACE_GOJQ is not set: run the tests with `cargo xtask test`")
}

/// The input, and its number of objects and of keys.
fn document() -> (Value, u64, u64) {
    let mut keys = 0;
    let items: Vec<Value> = (0..OBJECTS)
        .map(|i| {
            let tags: serde_json::Map<String, Value> =
                (0..=i % 30).map(|t| (format!("t{t}"), json!(t))).collect();
            keys += 4 + tags.len() as u64;
            json!({ "id": i, "k": format!("g{}", i % 50), "tags": tags, "v": [i, i + 1] })
        })
        .collect();
    (Value::Array(items), 2 * OBJECTS, keys)
}

#[test]
fn gojq_from_debian_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, objects, keys) = document();
    let input = dir.path().join("in.json");
    std::fs::write(&input, serde_json::to_vec(&doc).unwrap()).unwrap();
    let filter = "group_by(.k) | map({key: .[0].k, n: length, tags: (map(.tags) | add | length)})";
    let untraced = Command::new(gojq())
        .args(["-c", filter])
        .arg(&input)
        .output()
        .unwrap();
    assert!(untraced.status.success());

    let (csv, json_path) = (dir.path().join("e.csv"), dir.path().join("s.json"));
    let mut tracer = Tracer::start_command(
        Command::new(map_trace_bin())
            .arg("--csv")
            .arg(&csv)
            .arg("--summary-json")
            .arg(&json_path)
            .arg("--")
            .arg(gojq())
            .args(["-c", filter])
            .arg(&input),
    );
    let attached = tracer.wait_attached(LIMIT);
    assert!(attached.contains("go1.19"), "{attached}");
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    // The target is unharmed: the same output as without tracing.
    assert_eq!(done.stdout.as_bytes(), untraced.stdout.as_slice());

    let summary: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(summary["lost_events"], 0);
    let process = &summary["processes"][0];
    let decoder = process["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["site"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{DECODER} "))
        })
        .unwrap_or_else(|| panic!("no site in {DECODER}: {:#}", process["sites"]));
    assert_eq!(decoder["maps"], objects, "{decoder:#}");
    assert_eq!(decoder["first_use"], false, "{decoder:#}");
    assert!(decoder["bytes"].as_u64().unwrap() > 0, "{decoder:#}");

    // Row by row: a make per object, an assign per key, from the decoder.
    let rows = read_csv(&csv);
    let from_decoder = |event: &str| {
        rows.iter()
            .filter(|r| r["event"] == event && r["caller"] == DECODER)
            .count() as u64
    };
    assert_eq!(from_decoder("make"), objects);
    assert_eq!(from_decoder("assign"), keys);

    let text = done.summary();
    assert!(text.lines().count() <= 120, "{text}");
    assert!(text.contains(&format!("{objects}")), "{text}");
    assert!(text.contains("lost events: 0"), "{text}");
}
