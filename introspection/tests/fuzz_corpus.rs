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

#[test]
fn leveldb_corpus_replays() {
    replay("leveldb", fuzz_entry::leveldb);
}

/// Writes LevelDB seed inputs (small real databases written by
/// `rusty-leveldb`, as bundles, and their lone write-ahead logs) into
/// `$FUZZ_SEED_DIR/leveldb`; see `fuzz/README.md`. Ignored: run by hand.
#[test]
#[ignore]
fn write_leveldb_seeds() {
    use introspection::decode::leveldb::bundle;
    use rusty_leveldb::{Options, DB};
    let out =
        Path::new(&std::env::var("FUZZ_SEED_DIR").expect("FUZZ_SEED_DIR set")).join("leveldb");
    std::fs::create_dir_all(&out).unwrap();
    let split = |a: &[u8], b: &[u8]| {
        let mut v = vec![1u8];
        v.extend_from_slice(&(a.len() as u16).to_le_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        v
    };
    let mut prev = Vec::new();
    for (i, (compress, flush, n)) in [(0u8, false, 6u64), (1, true, 12), (0, true, 30)]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            write_buffer_size: 512,
            block_size: 128,
            compressor: compress,
            ..Options::default()
        };
        let mut db = DB::open(dir.path(), opts).unwrap();
        for j in 0..n {
            let k = format!("k{:02}", j % 9);
            if j % 4 == 3 {
                db.delete(k.as_bytes()).unwrap();
            } else {
                db.put(k.as_bytes(), format!("v{j}").as_bytes()).unwrap();
            }
        }
        if flush {
            db.flush().unwrap();
        }
        drop(db);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read(e.path()).unwrap())
            })
            .filter(|(name, _)| name != "LOCK" && !name.starts_with("LOG"))
            .collect();
        files.sort();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
        let b = bundle::encode("/db", &refs);
        let mut one = vec![0u8];
        one.extend_from_slice(&b);
        std::fs::write(out.join(format!("seed-bundle{i}")), one).unwrap();
        std::fs::write(out.join(format!("seed-pair{i}")), split(&prev, &b)).unwrap();
        for (name, bytes) in &files {
            if name.ends_with(".log") && !bytes.is_empty() {
                let mut one = vec![0u8];
                one.extend_from_slice(bytes);
                std::fs::write(out.join(format!("seed-log{i}-{name}")), one).unwrap();
            }
        }
        prev = b;
    }
}
