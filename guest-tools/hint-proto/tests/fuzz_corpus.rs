//! Replays the saved fuzz corpus (`fuzz/corpus/hint_stream`, minimized
//! output of `cargo fuzz run hint_stream`) through the fuzz target's own
//! function, so CI re-checks every input the fuzzer found interesting.
use std::path::Path;

#[test]
fn saved_fuzz_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/hint_stream");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the saved corpus directory exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        hint_proto::fuzz_entry::hint_stream(&data);
        n += 1;
    }
    // A corpus that silently vanished would make this test vacuous.
    assert!(n >= 10, "only {n} corpus files in {}", dir.display());
}
