//! Replays the saved fuzz corpora (`fuzz/corpus/<target>`, minimized
//! output of `cargo fuzz run <target>`, see `fuzz/README.md`) through the
//! fuzz targets' own functions, so CI re-checks every input the fuzzer
//! found interesting without a nightly toolchain.
use std::path::Path;

use introspection::decode::fuzz_entry;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the saved corpus directory exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(p) = std::panic::catch_unwind(|| f(&data)) {
            std::panic::resume_unwind(Box::new(format!(
                "{} panics: {:?}",
                path.display(),
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or(p.downcast_ref::<&str>().copied())
            )));
        }
        n += 1;
    }
    // A corpus that silently vanished would make this test vacuous.
    assert!(n >= 10, "only {n} corpus files in {}", dir.display());
}

#[test]
fn sqlite_corpus_replays() {
    replay("sqlite", fuzz_entry::sqlite);
}

#[test]
fn json_corpus_replays() {
    replay("json", fuzz_entry::json);
}

#[test]
fn kv_corpus_replays() {
    replay("kv", fuzz_entry::kv);
}
