//! The static binary `cargo xtask dist` builds, and the image `cargo xtask image` builds
//! around it, as users get them: one file that traces a Go process from a root holding
//! nothing else, with exact counts. `cargo xtask test` passes both in `MAP_TRACE_DIST` and
//! `MAP_TRACE_IMAGE`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    GO_SWISS, Program, Report, Tracer, assert_events_match, build_go, read_csv,
};
use object::{
    Object as _, ObjectSection as _, elf, read::elf::ElfFile64, read::elf::ProgramHeader,
};

const LIMIT: Duration = Duration::from_mins(2);

fn dist_bin() -> PathBuf {
    std::env::var_os("MAP_TRACE_DIST")
        .expect("MAP_TRACE_DIST names the binary `cargo xtask dist` built: run cargo xtask test")
        .into()
}

fn image() -> String {
    std::env::var("MAP_TRACE_IMAGE")
        .expect("MAP_TRACE_IMAGE names the image `cargo xtask image` built: run cargo xtask test")
}

#[test]
fn the_dist_binary_is_static_and_stripped() {
    let bin = dist_bin();
    let data = std::fs::read(&bin).unwrap();
    assert!(data.len() <= 6 * 1024 * 1024, "{} bytes", data.len());
    let file = ElfFile64::<object::Endianness>::parse(&*data).unwrap();
    let endian = file.endian();
    // No interpreter and no shared library: it runs where nothing else is installed.
    for header in file.elf_program_headers() {
        assert_ne!(header.p_type(endian), elf::PT_INTERP, "has an interpreter");
    }
    assert!(
        file.imports().unwrap().is_empty(),
        "imports symbols from shared libraries"
    );
    let dynamic = file.section_by_name(".dynamic").map(|s| s.data().unwrap());
    if let Some(dynamic) = dynamic {
        // Entries are (tag, value) pairs of u64.
        let needed = dynamic
            .chunks_exact(16)
            .filter(|e| u64::from_le_bytes(e[..8].try_into().unwrap()) == u64::from(elf::DT_NEEDED))
            .count();
        assert_eq!(needed, 0, "DT_NEEDED entries");
    }
    assert!(file.section_by_name(".symtab").is_none(), "not stripped");
    let debug: Vec<&str> = file
        .sections()
        .filter_map(|s| s.name().ok())
        .filter(|n| n.starts_with(".debug"))
        .collect();
    assert!(debug.is_empty(), "debug sections: {debug:?}");

    // --version names the commit it was built from.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8(version.stdout).unwrap(),
        format!(
            "map-trace {} (git {})\n",
            env!("CARGO_PKG_VERSION"),
            head.trim()
        )
    );
}

#[test]
fn the_dist_binary_alone_in_an_empty_root_traces_exactly() {
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(dist_bin(), root.path().join("map-trace")).unwrap();
    traces_exactly_from(root.path());
}

#[test]
fn the_image_holds_the_dist_binary_and_traces_exactly() {
    let image = image();
    let inspect = buildah(&["inspect", "--type", "image", &image]);
    let config: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        config["OCIv1"]["config"]["Entrypoint"],
        serde_json::json!(["/map-trace"]),
        "{inspect}"
    );
    let container = Container::from(&image);
    let files: Vec<_> = std::fs::read_dir(&container.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["map-trace"], "the image holds only the binary");
    assert_eq!(
        std::fs::read(container.root.join("map-trace")).unwrap(),
        std::fs::read(dist_bin()).unwrap(),
        "the image's binary is not the dist binary"
    );
    traces_exactly_from(&container.root);
}

/// Runs `ROOT/map-trace` chrooted into `root`, with only /proc, /sys and tracefs mounted
/// there (in a mount namespace of its own), against mapops: its CSV must count exactly what
/// mapops did.
fn traces_exactly_from(root: &Path) {
    for dir in ["proc", "sys"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let bin = build_go("mapops", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let mut program = Program::start_ready(
        &bin,
        &["-wait", "-n", "2000", "-out", report_path.to_str().unwrap()],
    );
    let pid = program.pid();
    let script = r#"set -e
r=$1; shift
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys"
mount -t tracefs tracefs "$r/sys/kernel/tracing"
exec chroot "$r" /map-trace "$@""#;
    let mut tracer = Tracer::start_command(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(root)
            .args(["--pid", &pid.to_string(), "--csv", "/events.csv"]),
    );
    let attached = tracer.wait_attached(LIMIT);
    assert!(attached.contains(&format!("to pid {pid} ")), "{attached}");
    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success(), "mapops failed under tracing: {status}");
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "map-trace: {:?}", done.stderr);
    let report = Report::read(&report_path);
    assert_events_match(&report, &read_csv(&root.join("events.csv")), pid);
    assert!(
        done.summary().contains("lost events: 0"),
        "{}",
        done.summary()
    );
}

fn buildah(args: &[&str]) -> String {
    let out = Command::new("buildah")
        .args(["--storage-driver", "vfs"])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("start buildah");
    assert!(out.status.success(), "buildah {args:?}: {}", out.status);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A working container of the image, its root file system mounted; removed on drop.
struct Container {
    name: String,
    root: PathBuf,
}

impl Container {
    fn from(image: &str) -> Self {
        let name = buildah(&["from", "--pull-never", "--quiet", image]);
        let root = buildah(&["mount", &name]).into();
        Self { name, root }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .args(["--storage-driver", "vfs", "rm", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}
