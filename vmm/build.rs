//! Builds the microguest (its own Cargo workspace under guest-tools/) and
//! hands its ELF to the `vmm` crate, which embeds it as the default kernel.
//! Also names the build: `VMM_BUILD_VERSION` is the crate version plus the
//! git commit built (`0.1.0+g1a2b3c4d5e6f`; the bare version outside a git
//! checkout), recorded at every barrier (`changelog::metrics`).
//!
//! The microguest gets its own target directory inside this build's target
//! directory, so a fresh clone needs no extra command and the host's build
//! flags (RUSTFLAGS, clippy's wrapper, the outer target dir) do not leak in.
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// `git rev-parse ARGS` in `dir`, if git answers.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .arg("rev-parse")
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Emits `VMM_BUILD_VERSION`, rerun when HEAD or its branch moves.
fn build_version(manifest_dir: &Path) {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap();
    let commit = git(manifest_dir, &["--short=12", "HEAD"]);
    let mut watched = vec![git(manifest_dir, &["--git-path", "HEAD"])];
    if let Some(branch) = git(manifest_dir, &["--symbolic-full-name", "HEAD"]) {
        watched.push(git(manifest_dir, &["--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        let path = manifest_dir.join(path);
        // A path that does not exist (a packed ref) would rerun every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let full = match commit {
        Some(c) => format!("{version}+g{c}"),
        None => version,
    };
    println!("cargo:rustc-env=VMM_BUILD_VERSION={full}");
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    build_version(&manifest_dir);
    let guest_dir = manifest_dir.join("../guest-tools/microguest");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one guest
    // build between the build scripts of every profile and of clippy.
    let target_root = out_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.clone());
    let guest_target_dir = target_root.join("microguest");

    let embedded = out_dir.join("microguest.elf");
    // A prebuilt microguest (for developers iterating on the VMM while the
    // guest is being changed): used as is.
    println!("cargo:rerun-if-env-changed=VMM_MICROGUEST_ELF");
    if let Ok(prebuilt) = std::env::var("VMM_MICROGUEST_ELF") {
        println!("cargo:rerun-if-changed={prebuilt}");
        std::fs::copy(&prebuilt, &embedded)
            .unwrap_or_else(|e| panic!("VMM_MICROGUEST_ELF={prebuilt}: {e}"));
        return;
    }

    for watched in [
        "src",
        "Cargo.toml",
        "build.rs",
        "link.ld",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            guest_dir.join(watched).display()
        );
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest_dir)
        .args([
            "build",
            "--release",
            "--target",
            GUEST_TARGET,
            "--target-dir",
        ])
        .arg(&guest_target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the microguest: {e}"));
    if !status.success() {
        panic!("building the microguest failed ({status}); see the errors above");
    }
    let elf = guest_target_dir
        .join(GUEST_TARGET)
        .join("release/microguest");
    std::fs::copy(&elf, &embedded).unwrap_or_else(|e| {
        panic!(
            "cannot copy {} to {}: {e}",
            elf.display(),
            embedded.display()
        )
    });
}
