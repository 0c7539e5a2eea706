//! `cargo xtask dist` and `cargo xtask image`: the one static file users install, and a
//! container image that holds nothing else.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cargo, run, setup::Tools};

/// Larger than this and the build lost its stripping or its LTO.
const MAX_BYTES: u64 = 6 * 1024 * 1024;
/// The image's name in the local containers storage.
pub const IMAGE: &str = "localhost/map-trace";

/// The architectures `cargo xtask dist --target` builds for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum DistArch {
    #[value(name = "x86_64")]
    X86_64,
    Aarch64,
}

impl DistArch {
    pub const ALL: [DistArch; 2] = [DistArch::X86_64, DistArch::Aarch64];

    /// The Rust target: musl, so the binary is static.
    pub fn triple(self) -> &'static str {
        match self {
            DistArch::X86_64 => "x86_64-unknown-linux-musl",
            DistArch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The file in `target/dist`: x86-64's keeps the name it had before arm64.
    fn file(self) -> &'static str {
        match self {
            DistArch::X86_64 => "map-trace",
            DistArch::Aarch64 => "map-trace-aarch64",
        }
    }
}

/// Builds `target/dist/map-trace` (or `map-trace-aarch64`): musl, static-pie, stripped,
/// linked whole.
pub fn dist(root: &Path, tools: &Tools, arch: DistArch) -> anyhow::Result<PathBuf> {
    run(cargo(root, tools).args([
        "build",
        "--package",
        "map-trace",
        "--profile",
        "dist",
        "--target",
        arch.triple(),
    ]))?;
    let built = root
        .join("target")
        .join(arch.triple())
        .join("dist/map-trace");
    let out = root.join("target/dist").join(arch.file());
    copy(&built, &out)?;
    let size = std::fs::metadata(&out)
        .with_context(|| format!("reading {}", out.display()))?
        .len();
    if size > MAX_BYTES {
        bail!(
            "{} is {size} bytes, over the {MAX_BYTES} allowed",
            out.display()
        );
    }
    println!("{} ({size} bytes)", out.display());
    Ok(out)
}

/// The image `cargo xtask image` built, and the binary it holds.
pub struct Image {
    pub bin: PathBuf,
    pub tag: String,
}

/// Builds the image from the Containerfile with buildah (vfs storage: no overlay needed),
/// tagged with the revision the binary names and `latest`.
pub fn image(root: &Path, tools: &Tools) -> anyhow::Result<Image> {
    let bin = dist(root, tools, DistArch::X86_64)?;
    // The context holds the binary alone: target/dist is also cargo's own output folder
    // for the dist profile, and buildah would send all of it.
    let context = root.join("target/image");
    copy(&bin, &context.join("map-trace"))?;
    let revision = revision(&bin)?;
    let tag = format!("{IMAGE}:{revision}");
    run(Command::new("buildah")
        .args(["--storage-driver", "vfs", "bud", "--quiet", "--file"])
        .arg(root.join("Containerfile"))
        .args(["--tag", &tag, "--tag", &format!("{IMAGE}:latest")])
        .args([
            "--label",
            &format!("org.opencontainers.image.revision={revision}"),
        ])
        .arg(&context))?;
    println!("{tag}");
    Ok(Image { bin, tag })
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The git revision `bin --version` names (map-trace/build.rs put it there).
fn revision(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    version
        .split_once("(git ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(revision, _)| revision.to_owned())
        .with_context(|| format!("{} --version names no revision: {version}", bin.display()))
}
