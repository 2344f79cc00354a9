//! Application-level replay into SQLite against plain rusqlite, in one run:
//! `cargo bench -p replay --bench semantic`.
//!
//! 100k row changes (70k inserts, 20k updates, 10k deletes of a
//! 4-column table), already parsed, are folded and written as a new SQLite
//! database (`replay::semantic::fold` + `output::write_sqlite`); the baseline
//! inserts the same final rows with rusqlite in one transaction, with the
//! same pragmas (journal off: both build a new file that is renamed into
//! place), from native tuples in id order whose text lies in one buffer in
//! that order (its most favourable layout, and one that does not move with
//! the heap the replay leaves behind). Best of 11 rounds (alternating) each;
//! the ratio is baseline time / replay time (the goal is >= 0.5). The
//! read-back check `vmm replay --semantic` does after writing (decode the
//! new file, compare checksums) is timed on its own.
//!
//! "Already parsed" is the stream as `VmStream::read` hands it over: the
//! log's records (the JSON of `SemanticEvent::Change`) read by
//! `change::parse_record`. That parse is timed on its own too, beside the
//! log type's own parse (`serde_json` into `SemanticEvent`, `Value` rows),
//! and the end-to-end ratio from the records' text is printed as well.
use std::ops::Range;
use std::time::{Duration, Instant};

use introspection::decode::SchemaHints;
use introspection::lift::SemanticEvent;
use introspection::semantic::{Change, Format, Op, SemanticChange};
use replay::semantic::change::{parse_record, Lifted, Record, Shared};
use replay::semantic::{fold, output, Key, Selection, SCHEMA};
use serde_json::{json, Value};

const CHANGES: u64 = 100_000;
const ROUNDS: usize = 11;
const SQL: &str =
    "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, email TEXT, score REAL)";

fn row(id: u64, gen: u64) -> Value {
    json!({
        "id": id,
        "name": format!("customer {id} v{gen}"),
        "email": format!("user{id}@example.com"),
        "score": (id * 7 + gen) as f64 / 4.0,
    })
}

fn change(
    seq: u64,
    key: u64,
    op: Op,
    before: Option<Value>,
    after: Option<Value>,
) -> SemanticChange {
    SemanticChange::from_change(
        "vm0",
        seq,
        seq,
        "app.db",
        Format::Sqlite,
        Change {
            collection: "customers".into(),
            key: key.to_string(),
            op,
            before,
            after,
        },
    )
}

/// The stream: a schema entry, then 70% inserts, 20% updates, 10% deletes
/// (xorshift-chosen keys among the rows inserted so far).
fn stream() -> Vec<SemanticChange> {
    let mut out = vec![SemanticChange::from_change(
        "vm0",
        1,
        1,
        "app.db",
        Format::Sqlite,
        Change {
            collection: SCHEMA.into(),
            key: "customers".into(),
            op: Op::Insert,
            before: None,
            after: Some(
                json!({"type": "table", "name": "customers", "tbl_name": "customers", "sql": SQL}),
            ),
        },
    )];
    let mut live: Vec<u64> = Vec::new();
    let mut gen = std::collections::HashMap::new();
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut next = 1;
    for i in 0..CHANGES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seq = 2 + i / 100;
        match i % 10 {
            0..=6 => {
                out.push(change(seq, next, Op::Insert, None, Some(row(next, 0))));
                live.push(next);
                gen.insert(next, 0);
                next += 1;
            }
            7 | 8 => {
                let id = live[(x % live.len() as u64) as usize];
                let g = gen[&id];
                out.push(change(
                    seq,
                    id,
                    Op::Update,
                    Some(row(id, g)),
                    Some(row(id, g + 1)),
                ));
                gen.insert(id, g + 1);
            }
            _ => {
                let at = (x % live.len() as u64) as usize;
                let id = live.swap_remove(at);
                out.push(change(seq, id, Op::Delete, Some(row(id, gen[&id])), None));
            }
        }
    }
    out
}

/// CPU time of this thread (user + system): the machines this runs on are
/// shared, and wall time there measures the neighbours as much as the code.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f`, returning (wall, cpu) time.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (w, c) = (Instant::now(), cpu_now());
    let out = f();
    (out, w.elapsed(), cpu_now() - c)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<String> = stream()
        .into_iter()
        .map(|c| serde_json::to_string(&SemanticEvent::Change(c)).unwrap())
        .collect();
    let parse = || {
        let mut shared = Shared::default();
        records
            .iter()
            .map(|r| match parse_record(r, "app.db", &mut shared) {
                Record::Change(c) => c,
                _ => unreachable!(),
            })
            .collect::<Vec<Lifted>>()
    };
    let changes = parse();
    let hints = SchemaHints::default();
    let state = fold(&changes, &Selection::default(), &[]).state;
    // The final rows as native tuples, for the baseline; timed too, as the
    // floor of what reading rows out of their JSON form costs.
    let (rows, extract_wall, extract_cpu) = timed(|| extract(&state));
    // For profiling one part: SEMANTIC_BENCH_ONLY=parse|fold|write|baseline.
    if let Ok(only) = std::env::var("SEMANTIC_BENCH_ONLY") {
        for round in 0..20 {
            let path = dir.path().join(format!("only-{round}.db"));
            match only.as_str() {
                "parse" => drop(parse()),
                "fold" => drop(fold(&changes, &Selection::default(), &[])),
                "write" => output::write_sqlite(&state, &hints, &path).unwrap(),
                _ => insert_rows(&path, &rows),
            }
        }
        return;
    }
    // Rounds alternate between the two, so that both see the same load;
    // each figure is the best of its rounds.
    let mut t = Times::default();
    for _ in 0..3 {
        let (parsed, pw, pc) = timed(parse);
        t.parse = t.parse.min((pw, pc));
        drop(parsed);
        let (parsed, vw, vc) = timed(|| {
            records
                .iter()
                .map(|r| serde_json::from_str::<SemanticEvent>(r).unwrap())
                .collect::<Vec<_>>()
        });
        t.parse_values = t.parse_values.min((vw, vc));
        drop(parsed);
    }
    for round in 0..ROUNDS {
        let path = dir.path().join(format!("replay-{round}.db"));
        let (f, fw, fc) = timed(|| fold(&changes, &Selection::default(), &[]));
        let ((), ww, wc) = timed(|| output::write_sqlite(&f.state, &hints, &path).unwrap());
        t.fold = t.fold.min((fw, fc));
        t.write = t.write.min((ww, wc));
        t.replay = t.replay.min((fw + ww, fc + wc));
        drop(f);
        let path = dir.path().join(format!("baseline-{round}.db"));
        let ((), bw, bc) = timed(|| insert_rows(&path, &rows));
        t.baseline = t.baseline.min((bw, bc));
    }
    let written = dir.path().join("replay-0.db");
    for _ in 0..3 {
        let ((), vw, vc) =
            timed(|| output::verify(&state, Format::Sqlite, &hints, &written).unwrap());
        t.verify = t.verify.min((vw, vc));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "semantic replay: {CHANGES} changes -> {} rows into SQLite vs rusqlite inserting the same rows in one transaction",
        rows.len()
    );
    println!(
        "  (for reference: reading the final rows out of their JSON form into tuples takes {:.1} ms wall, {:.1} ms cpu)",
        ms(extract_wall),
        ms(extract_cpu)
    );
    for (what, i) in [("wall", 0), ("cpu", 1)] {
        let get = |p: (Duration, Duration)| if i == 0 { p.0 } else { p.1 };
        println!(
            "  {what:<4}: replay {:.1} ms (fold {:.1} + write {:.1}); baseline {:.1} ms; ratio {:.2} (goal >= 0.50); read-back check {:.1} ms",
            ms(get(t.replay)),
            ms(get(t.fold)),
            ms(get(t.write)),
            ms(get(t.baseline)),
            get(t.baseline).as_secs_f64() / get(t.replay).as_secs_f64(),
            ms(get(t.verify)),
        );
        println!(
            "        reading the {} records: {:.1} ms compact ({:.1} ms as SemanticEvent values); end to end from the records' text: ratio {:.2}",
            records.len(),
            ms(get(t.parse)),
            ms(get(t.parse_values)),
            get(t.baseline).as_secs_f64() / (get(t.parse) + get(t.replay)).as_secs_f64(),
        );
    }
}

/// The final rows as native tuples, by id.
struct Tuples {
    /// (id, name, email, score); name and email are ranges of `text`.
    rows: Vec<(i64, Range<usize>, Range<usize>, f64)>,
    /// All the rows' text, in row order: the layout most favourable to the
    /// baseline, and one that does not depend on where the allocator put
    /// strings among the replay's allocations (with a `String` per name,
    /// the baseline took 20% longer after a change to the replay's rows).
    text: String,
}

impl Tuples {
    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// The rows of the folded state as tuples.
fn extract(state: &replay::semantic::State<'_>) -> Tuples {
    let mut t = Tuples {
        rows: Vec::new(),
        text: String::new(),
    };
    let put = |text: &mut String, s: &str| {
        text.push_str(s);
        text.len() - s.len()..text.len()
    };
    for (k, v) in replay::semantic::state::sorted(&state.collections["customers"]) {
        let Key::Int(id) = k else { unreachable!() };
        let name = put(&mut t.text, v.get_str("name").unwrap());
        let email = put(&mut t.text, v.get_str("email").unwrap());
        let score = v.get("score").unwrap().as_f64().unwrap();
        t.rows.push((*id, name, email, score));
    }
    t
}

/// Best (wall, cpu) times.
struct Times {
    parse: (Duration, Duration),
    parse_values: (Duration, Duration),
    fold: (Duration, Duration),
    write: (Duration, Duration),
    replay: (Duration, Duration),
    baseline: (Duration, Duration),
    verify: (Duration, Duration),
}

impl Default for Times {
    fn default() -> Self {
        let max = (Duration::MAX, Duration::MAX);
        Times {
            parse: max,
            parse_values: max,
            fold: max,
            write: max,
            replay: max,
            baseline: max,
            verify: max,
        }
    }
}

/// The baseline: the final rows inserted with rusqlite in one transaction.
fn insert_rows(path: &std::path::Path, rows: &Tuples) {
    let mut db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        .unwrap();
    let tx = db.transaction().unwrap();
    tx.execute_batch(SQL).unwrap();
    {
        let mut stmt = tx
            .prepare("INSERT INTO customers(id, name, email, score) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for (id, name, email, score) in &rows.rows {
            let (name, email) = (&rows.text[name.clone()], &rows.text[email.clone()]);
            stmt.execute(rusqlite::params![id, name, email, score])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    db.close().unwrap();
}
