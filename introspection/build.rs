//! Hashes each decoder's source at build time: a decoder's version hash
//! (`decode::registry`) is derived from the exact code that decodes, so a
//! change lifted by one build names the code that lifted it, and a log
//! re-derived by another build says whether the code was the same.
//!
//! Per format, the files hashed are that format's own sources plus the
//! ones every decoder shares (`decode/mod.rs`, `decode/registry.rs`: the
//! limits, the budget and what each decoder's options mean). Each file
//! goes in as its path relative to `src/`, its length and its bytes, in
//! path order. The hashes reach the crate as `DECODER_SRC_<FORMAT>`.
use std::path::{Path, PathBuf};

const SHARED: [&str; 2] = ["decode/mod.rs", "decode/registry.rs"];
const FORMATS: [(&str, &str); 4] = [
    ("SQLITE", "decode/sqlite"),
    ("JSON", "decode/json"),
    ("KV", "decode/kv.rs"),
    ("LEVELDB", "decode/leveldb"),
];

fn files_under(src: &Path, rel: &str, out: &mut Vec<String>) {
    let path = src.join(rel);
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for e in entries {
            let name = e
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            files_under(src, &format!("{rel}/{name}"), out);
        }
    } else if rel.ends_with(".rs") {
        out.push(rel.to_string());
    }
}

fn main() {
    let src =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("src");
    println!("cargo:rerun-if-changed=build.rs");
    for (name, own) in FORMATS {
        let mut files: Vec<String> = SHARED.iter().map(|s| s.to_string()).collect();
        files_under(&src, own, &mut files);
        files.sort();
        let mut h = blake3::Hasher::new();
        for rel in &files {
            let path = src.join(rel);
            println!("cargo:rerun-if-changed={}", path.display());
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            h.update(rel.as_bytes());
            h.update(&[0]);
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        println!(
            "cargo:rustc-env=DECODER_SRC_{name}={}",
            h.finalize().to_hex()
        );
    }
}
