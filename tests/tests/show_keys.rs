//! `--show-keys`: the key column holds each key exactly as the program used it (checked by
//! hashing the column back to the event's key hash, whose sums equal the program's own),
//! files holding keys are readable by their owner only, and `--help` warns about secrets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{fs, os::unix::fs::PermissionsExt as _, process::Command, time::Duration};

use integration_tests::{
    GO_CLASSIC, GO_SWISS, Report, Tracer, assert_events_match, build_go, map_trace_bin, read_csv,
};
use map_trace_common::key_hash;

const LIMIT: Duration = Duration::from_mins(4);

/// The bytes the contract hashes, rebuilt from the key column of one of mapops' maps.
fn key_bytes(map: &str, key: &str) -> Vec<u8> {
    match map {
        "string" => key.as_bytes().to_vec(),
        "int64" => key.parse::<i64>().unwrap().to_le_bytes().to_vec(),
        "int32" => key.parse::<i32>().unwrap().to_le_bytes().to_vec(),
        "pointer" => u64::from_str_radix(key.strip_prefix("0x").unwrap(), 16)
            .unwrap()
            .to_le_bytes()
            .to_vec(),
        "array16" => {
            let hex = key.strip_prefix("0x").unwrap();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        }
        other => panic!("unknown map {other}"),
    }
}

fn show_keys(go: &str) {
    let bin = build_go("mapops", go);
    let dir = tempfile::tempdir().unwrap();
    let (csv, report_path) = (
        dir.path().join("events.csv"),
        dir.path().join("report.json"),
    );
    // An existing, world-readable file must not stay so once it holds keys.
    fs::write(&csv, "old").unwrap();
    fs::set_permissions(&csv, fs::Permissions::from_mode(0o644)).unwrap();
    let tracer = Tracer::start(&[
        "--show-keys",
        "--csv",
        csv.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-n",
        "500",
        "-out",
        report_path.to_str().unwrap(),
    ]);
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert_eq!(
        fs::metadata(&csv).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let header = fs::read_to_string(&csv).unwrap();
    assert!(
        header.lines().next().unwrap().ends_with(",type,site,key"),
        "{header:.200}"
    );
    let rows = read_csv(&csv);
    let report = Report::read(&report_path);
    let pid: u32 = rows[0]["pid"].parse().unwrap();
    assert_events_match(&report, &rows, pid);
    for m in &report.maps {
        let mine: Vec<_> = rows.iter().filter(|r| r["map"] == m.addr).collect();
        assert!(!mine.is_empty());
        for r in mine {
            let key = &r["key"];
            if r["key_hash"].is_empty() {
                assert!(key.is_empty(), "a key without a key hash: {r:?}");
                continue;
            }
            let bytes = key_bytes(&m.name, key);
            assert!(bytes.len() <= 128, "key not cut at 128 bytes: {r:?}");
            assert_eq!(
                format!("{:016x}", key_hash(&bytes)),
                r["key_hash"],
                "key column and key hash disagree: {r:?}"
            );
        }
        // Keys read as the program wrote them, not just consistently.
        let sample: Vec<&str> = rows
            .iter()
            .filter(|r| r["map"] == m.addr && r["event"] == "assign")
            .map(|r| r["key"].as_str())
            .take(3)
            .collect();
        let expected: &[&str] = match m.name.as_str() {
            "string" => &["key-1", "key-2"],
            "int64" => &["-1000", "-999", "-998"],
            "int32" => &["0", "7", "14"],
            _ => &[],
        };
        if m.name == "string" {
            // Key 0 is a 200-digit key, cut to its first 128 bytes.
            assert_eq!(rows_first_key(&rows, &m.addr), "0".repeat(128));
            assert_eq!(&sample[1..], expected);
        } else if !expected.is_empty() {
            assert_eq!(sample, expected, "{}", m.name);
        }
    }
}

fn rows_first_key(rows: &[integration_tests::Row], map: &str) -> String {
    rows.iter()
        .find(|r| r["map"] == map && r["event"] == "assign")
        .map(|r| r["key"].clone())
        .unwrap()
}

#[test]
fn keys_shown_exactly_classic() {
    show_keys(GO_CLASSIC);
}

#[test]
fn keys_shown_exactly_swiss() {
    show_keys(GO_SWISS);
}

#[test]
fn help_warns_that_keys_can_be_secrets() {
    let out = Command::new(map_trace_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let at = help.find("--show-keys").expect("--show-keys in --help");
    let text = &help[at..help.len().min(at + 400)];
    assert!(text.contains("secrets"), "{text}");
    assert!(text.contains("0600"), "{text}");
}
