//! JSON decoder against an independent parser: seeded random documents
//! are written as text (every number spelling: 17-digit floats, integers
//! beyond 64 bits, `-0`, `1.0`/`1e0`, huge exponents; escapes; deep
//! nesting), Python's `json` module (numbers as exact `Decimal`s) reads the
//! same text, and every decoded leaf must denote exactly what Python read.
//! Then one number per document is respelled: the decoder must report a
//! change exactly when Python's values differ (same decimal value and sign
//! = no change), and an array turned into an object with the same paths
//! must be reported.

#[allow(dead_code)]
mod decode_sqlite_oracle;

use std::collections::BTreeMap;
use std::process::Command;

use decode_sqlite_oracle::Rng;
use introspection::decode::{self, Format, Op, SchemaHints};
use serde_json::Value;

const PY: &str = r#"
import json, sys
from decimal import Decimal
def canon(v):
    if v is None: return "null"
    if isinstance(v, bool): return "bool:" + str(v).lower()
    if isinstance(v, Decimal):
        sign, digits, exp = v.as_tuple()
        d = "".join(map(str, digits)).lstrip("0")
        if not d: return "num:-0" if sign else "num:0"
        t = len(d) - len(d.rstrip("0"))
        return "num:%s%se%d" % ("-" if sign else "", d.rstrip("0"), exp + t)
    if isinstance(v, str): return "str:" + v
    return "{}" if isinstance(v, dict) else "[]"
def esc(k): return k.replace("~", "~0").replace("/", "~1")
def flat(v, p, out):
    if isinstance(v, dict) and v:
        for k, c in v.items(): flat(c, p + "/" + esc(k), out)
    elif isinstance(v, list) and v:
        for i, c in enumerate(v): flat(c, p + "/" + str(i), out)
    else: out[p] = canon(v)
sys.setrecursionlimit(10000)
res = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        doc = json.loads(f.read(), parse_float=Decimal, parse_int=Decimal)
    out = {}
    flat(doc, "", out)
    res.append(out)
json.dump(res, sys.stdout)
"#;

/// The exact value of a number text, as the Python side renders it.
fn canon_num(t: &str) -> String {
    let (neg, t) = t.strip_prefix('-').map_or((false, t), |r| (true, r));
    let (m, e) = t.split_once(['e', 'E']).unwrap_or((t, "0"));
    let e: i64 = e.parse().unwrap();
    let (i, f) = m.split_once('.').unwrap_or((m, ""));
    let all = format!("{i}{f}");
    let d = all.trim_start_matches('0');
    if d.is_empty() {
        return if neg { "num:-0" } else { "num:0" }.into();
    }
    let trimmed = d.trim_end_matches('0');
    let exp = e - f.len() as i64 + (d.len() - trimmed.len()) as i64;
    format!("num:{}{trimmed}e{exp}", if neg { "-" } else { "" })
}

fn canon_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool:{b}"),
        Value::Number(n) => canon_num(&n.to_string()),
        Value::String(s) => format!("str:{s}"),
        Value::Object(o) if o.is_empty() => "{}".into(),
        Value::Array(_) => "[]".into(),
        Value::Object(o) => match o.get("$number") {
            Some(Value::String(t)) if o.len() == 1 => canon_num(t),
            _ => format!("object {v}"),
        },
    }
}

const WORDS: &[&str] = &[
    "a",
    "b",
    "name",
    "x/y",
    "t~1",
    "é",
    "0",
    "1",
    "",
    "k k",
    "q\"q",
    "back\\slash",
    "😀",
    "tab\t",
];

fn number(rng: &mut Rng) -> String {
    let f = f64::from_bits(rng.next());
    let long = 20 + rng.below(30) as usize;
    let digits = |rng: &mut Rng, n: usize| -> String {
        let mut s: String = (0..n)
            .map(|_| char::from(b'0' + rng.below(10) as u8))
            .collect();
        s.replace_range(0..1, &char::from(b'1' + rng.below(9) as u8).to_string());
        s
    };
    match rng.below(16) {
        0 => (rng.below(2000) as i64 - 1000).to_string(),
        1 => ["0", "-0", "0.0", "-0.0", "0e5", "-0E-3"][rng.below(6) as usize].into(),
        2 => [
            "1", "1.0", "1e0", "10e-1", "1.000", "0.1e1", "100", "1e2", "1E+2",
        ][rng.below(9) as usize]
            .into(),
        3 if f.is_finite() => format!("{f:.16e}"),
        4 if f.is_finite() => format!("{f}"),
        5 if f.is_finite() => format!("{f:e}"),
        6 => digits(rng, long),
        7 => format!("-{}", digits(rng, long)),
        8 => [
            "1e400",
            "-1e400",
            "1e-400",
            "2.5e-324",
            "1.7976931348623157e308",
            "4.9e-324",
        ][rng.below(6) as usize]
            .into(),
        9 => [
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
        ][rng.below(5) as usize]
            .into(),
        10 => format!("0.{}", digits(rng, 25)),
        11 => {
            let e = rng.below(40) as i64 - 20;
            format!("{}.{}e{e}", digits(rng, 3), digits(rng, 18))
        }
        12 => format!("{}", (rng.below(1_000_000) as f64) / 1000.0),
        13 => format!("{}.5", rng.below(100)),
        _ => rng.below(1 << 20).to_string(),
    }
}

fn string(rng: &mut Rng, out: &mut String) {
    out.push('"');
    for _ in 0..rng.below(8) {
        match rng.below(10) {
            0 => out.push_str("\\n"),
            1 => out.push_str("\\\""),
            2 => out.push_str("\\\\"),
            3 => out.push_str("\\u00e9"),
            4 => out.push_str("\\ud83d\\ude00"),
            5 => out.push_str("\\/"),
            6 => out.push('漢'),
            _ => out.push(char::from(b'a' + rng.below(26) as u8)),
        }
    }
    out.push('"');
}

fn ws(rng: &mut Rng, out: &mut String) {
    if rng.chance(20) {
        out.push_str([" ", "\n", "\t", "\r\n  "][rng.below(4) as usize]);
    }
}

fn value(rng: &mut Rng, depth: u32, out: &mut String) {
    ws(rng, out);
    let leaf = depth == 0 || rng.chance(35);
    if leaf {
        match rng.below(10) {
            0 => out.push_str("null"),
            1 => out.push_str(if rng.chance(50) { "true" } else { "false" }),
            2 => string(rng, out),
            3 => out.push_str(if rng.chance(50) { "{}" } else { "[]" }),
            _ => out.push_str(&number(rng)),
        }
    } else if rng.chance(50) {
        out.push('[');
        for i in 0..rng.below(5) {
            if i > 0 {
                out.push(',');
            }
            value(rng, depth - 1, out);
        }
        out.push(']');
    } else {
        out.push('{');
        let mut used = Vec::new();
        for _ in 0..rng.below(5) {
            let k = WORDS[rng.below(WORDS.len() as u64) as usize];
            if used.contains(&k) {
                continue;
            }
            if !used.is_empty() {
                out.push(',');
            }
            used.push(k);
            ws(rng, out);
            out.push_str(&serde_json::to_string(k).unwrap());
            out.push(':');
            value(rng, depth - 1, out);
        }
        out.push('}');
    }
    ws(rng, out);
}

/// One document; every tenth is a deep chain (up to 300 levels).
fn document(rng: &mut Rng, i: usize) -> String {
    let mut out = String::new();
    if i % 10 == 9 {
        let d = 100 + rng.below(200) as usize;
        for _ in 0..d {
            out.push_str(r#"{"n":"#);
        }
        value(rng, 3, &mut out);
        out.push_str(&"}".repeat(d));
    } else {
        value(rng, 5, &mut out);
    }
    out
}

fn python_leaves(dir: &std::path::Path, docs: &[String]) -> Vec<BTreeMap<String, String>> {
    let script = dir.join("oracle.py");
    std::fs::write(&script, PY).unwrap();
    let mut paths = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let p = dir.join(format!("d{i}.json"));
        std::fs::write(&p, d).unwrap();
        paths.push(p);
    }
    let out = Command::new("python3")
        .arg(&script)
        .args(&paths)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn decoded_leaves(doc: &str) -> Result<BTreeMap<String, String>, String> {
    let changes = decode::diff(Format::Json, b"", doc.as_bytes(), &SchemaHints::default())
        .map_err(|e| e.to_string())?;
    Ok(changes
        .iter()
        .map(|c| (c.key.clone(), canon_value(c.after.as_ref().unwrap())))
        .collect())
}

/// Respell the `k`-th number of `doc` (by a scan of number tokens outside
/// strings): `None` when there are fewer numbers.
fn respell(doc: &str, k: usize, new: &str) -> Option<String> {
    let b = doc.as_bytes();
    let (mut i, mut n, mut in_str) = (0, 0, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'-' || c.is_ascii_digit() {
            let s = i;
            while i < b.len() && (b[i].is_ascii_digit() || b"+-.eE".contains(&b[i])) {
                i += 1;
            }
            if n == k {
                return Some(format!("{}{new}{}", &doc[..s], &doc[i..]));
            }
            n += 1;
            continue;
        }
        i += 1;
    }
    None
}

#[test]
fn json_numbers_and_structure_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x0010_4a50_0a11);
    let docs: Vec<String> = (0..400).map(|i| document(&mut rng, i)).collect();
    let want = python_leaves(dir.path(), &docs);
    let (mut ok, mut leaves, mut wrong_leaves) = (0, 0, 0);
    let mut report = Vec::new();
    for (d, w) in docs.iter().zip(&want) {
        leaves += w.len();
        match decoded_leaves(d) {
            Ok(got) if &got == w => ok += 1,
            Ok(got) => {
                let bad: Vec<_> = w.iter().filter(|(k, v)| got.get(*k) != Some(v)).collect();
                wrong_leaves += bad.len().max(1);
                if report.len() < 8 {
                    report.push(format!(
                        "{:?} (got {:?})",
                        bad.first(),
                        bad.first().and_then(|(k, _)| got.get(*k))
                    ));
                }
            }
            Err(e) => {
                wrong_leaves += w.len();
                if report.len() < 8 {
                    report.push(format!("error {e}"));
                }
            }
        }
    }

    // Respellings: changed exactly when Python's values differ.
    let spellings = [
        "1",
        "1.0",
        "-0",
        "0",
        "1e0",
        "123456789012345678901234567890",
        "123456789012345678901234567891",
        "0.30000000000000004",
        "0.30000000000000005",
        "0.3",
        "1e400",
        "1e401",
        "18446744073709551616",
        "18446744073709551617",
        "-0.0",
        "10e-1",
    ];
    let mut pairs = Vec::new();
    for (i, d) in docs.iter().enumerate().take(200) {
        let a = spellings[i % spellings.len()];
        let b = spellings[(i * 7 + 3) % spellings.len()];
        if let (Some(x), Some(y)) = (respell(d, i % 3, a), respell(d, i % 3, b)) {
            pairs.push((x, y));
        }
    }
    let texts: Vec<String> = pairs
        .iter()
        .flat_map(|(x, y)| [x.clone(), y.clone()])
        .collect();
    let pw = python_leaves(dir.path(), &texts);
    let mut pair_ok = 0;
    for (k, (x, y)) in pairs.iter().enumerate() {
        let (la, lb) = (&pw[2 * k], &pw[2 * k + 1]);
        let mut want: Vec<&String> = la
            .iter()
            .filter(|(p, v)| lb.get(*p) != Some(v))
            .map(|(p, _)| p)
            .collect();
        want.extend(lb.keys().filter(|p| !la.contains_key(*p)));
        want.sort();
        want.dedup();
        let got = decode::diff(
            Format::Json,
            x.as_bytes(),
            y.as_bytes(),
            &SchemaHints::default(),
        );
        let got: Option<Vec<String>> = got.ok().map(|c| {
            let mut v: Vec<String> = c.into_iter().map(|c| c.key).collect();
            v.sort();
            v.dedup();
            v
        });
        if got.as_ref().map(|g| g.iter().collect::<Vec<_>>()) == Some(want.clone()) {
            pair_ok += 1;
        } else if report.len() < 12 {
            report.push(format!("respell: want {want:?}, got {got:?}"));
        }
    }

    // Array <-> object with the same paths.
    let shape = decode::diff(
        Format::Json,
        br#"{"v":[10,20]}"#,
        br#"{"v":{"0":10,"1":20}}"#,
        &SchemaHints::default(),
    )
    .unwrap_or_default();
    let shape_ok = shape.len() == 1 && shape[0].key == "/v" && shape[0].op == Op::Update;

    eprintln!(
        "json oracle: {ok} of {} documents exact ({leaves} leaves, {wrong_leaves} wrong); \
         respellings: {pair_ok} of {} right; array->object reported: {shape_ok}",
        docs.len(),
        pairs.len()
    );
    for r in &report {
        eprintln!("  {r}");
    }
    assert_eq!(ok, docs.len());
    assert_eq!(pair_ok, pairs.len());
    assert!(shape_ok, "{shape:?}");
}
