//! The `sqlite` workload as data (see the parent module).
#![allow(dead_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::*;

/// An SQL value, as bound to a statement or read from a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// Feeds the value to a checksum: type tag, then its bytes (lengths and
    /// numbers little-endian).
    pub fn hash(&self, h: &mut Fnv) {
        match self {
            Value::Null => h.write(&[0]),
            Value::Int(i) => {
                h.write(&[1]);
                h.write(&i.to_le_bytes());
            }
            Value::Real(r) => {
                h.write(&[2]);
                h.write(&r.to_bits().to_le_bytes());
            }
            Value::Text(t) => {
                h.write(&[3]);
                h.write(&(t.len() as u64).to_le_bytes());
                h.write(t.as_bytes());
            }
            Value::Blob(b) => {
                h.write(&[4]);
                h.write(&(b.len() as u64).to_le_bytes());
                h.write(b);
            }
        }
    }
}

/// One SQL statement and its parameters (`?` placeholders, in order).
#[derive(Clone, Debug)]
pub struct Stmt {
    pub sql: String,
    pub params: Vec<Value>,
}

fn stmt(sql: &str, params: Vec<Value>) -> Stmt {
    Stmt {
        sql: String::from(sql),
        params,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SqliteParams {
    pub seed: u64,
    /// Customers inserted by the load phase; every other phase scales with it.
    pub rows: u64,
    /// Statements per transaction in the load and mixed phases.
    pub txn: u64,
}

impl Default for SqliteParams {
    fn default() -> Self {
        Self {
            seed: 1,
            rows: 1000,
            txn: 50,
        }
    }
}

/// The connection settings both sides apply before the script, for
/// `journal` = delete | truncate | persist | wal. Each is its own statement
/// (PRAGMA journal_mode is not transactional).
pub fn sqlite_pragmas(journal: &str) -> Vec<String> {
    let mut v = Vec::new();
    v.push(String::from("PRAGMA page_size=4096"));
    v.push(format!("PRAGMA journal_mode={journal}"));
    // A flush at every commit: the host's consistency points.
    v.push(String::from("PRAGMA synchronous=FULL"));
    // 8 MiB of page cache: the whole database of a few thousand rows.
    v.push(String::from("PRAGMA cache_size=-8192"));
    v
}

/// Queries whose rows make up the final state (compared guest vs host).
pub const SQLITE_SUMMARY: [(&str, &str); 7] = [
    (
        "schema",
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name",
    ),
    ("customers", "SELECT * FROM customers ORDER BY id"),
    ("orders", "SELECT * FROM orders ORDER BY id"),
    ("kv", "SELECT * FROM kv ORDER BY k"),
    ("tags", "SELECT * FROM tags ORDER BY customer_id, tag"),
    ("audit", "SELECT * FROM audit ORDER BY id"),
    (
        "sqlite_sequence",
        "SELECT name, seq FROM sqlite_sequence ORDER BY name",
    ),
];

/// Row counts and a checksum over the rows of `SQLITE_SUMMARY`.
#[derive(Default, Debug, PartialEq)]
pub struct SqliteSummary {
    pub counts: Vec<(&'static str, u64)>,
    pub checksum: u64,
}

impl SqliteSummary {
    /// Feed the rows of query `i` of `SQLITE_SUMMARY` in order.
    pub fn add_rows(&mut self, h: &mut Fnv, i: usize, rows: &[Vec<Value>]) {
        h.write(&(i as u64).to_le_bytes());
        for row in rows {
            for v in row {
                v.hash(h);
            }
            h.write(&[0xff]);
        }
        self.counts.push((SQLITE_SUMMARY[i].0, rows.len() as u64));
        self.checksum = h.0;
    }

    /// `customers=N orders=N kv=N tags=N audit=N checksum=0x...` (the schema
    /// and sqlite_sequence rows count in the checksum only).
    pub fn line(&self) -> String {
        let mut s = String::new();
        for (name, n) in &self.counts {
            if *name != "schema" && *name != "sqlite_sequence" {
                s.push_str(&format!("{name}={n} "));
            }
        }
        s.push_str(&format!("checksum={:#018x}", self.checksum));
        s
    }
}

enum Phase {
    Schema,
    Load,
    Mixed,
    Alter(usize),
    Bulk,
    Mixed2,
    Done,
}

/// The SQLite workload: one transaction at a time (`next_txn`), each run as
/// `BEGIN; ...; COMMIT` by the executor.
///
/// Phases: create four tables (one WITHOUT ROWID, one AUTOINCREMENT) and an
/// index; load `rows` customers with orders and kv rows; `rows` mixed
/// updates, deletes and inserts; schema changes (ALTER TABLE ADD COLUMN,
/// CREATE/DROP TABLE of a big scratch table, a second WITHOUT ROWID table,
/// index changes); bulk deletes that free pages; `rows/4` more mixed ops.
/// Blobs and texts up to 20 KB give overflow chains (page size 4096).
/// Ids of updates and deletes are drawn at random and may name rows that
/// no longer exist (then nothing happens, on both sides alike).
pub struct SqliteScript {
    p: SqliteParams,
    rng: Rng,
    phase: Phase,
    done: u64,
    next_customer: u64,
    next_order: u64,
    txns: u64,
}

impl SqliteScript {
    pub fn new(p: SqliteParams) -> Self {
        let p = SqliteParams {
            rows: p.rows.max(1),
            txn: p.txn.max(1),
            ..p
        };
        Self {
            rng: Rng::new(p.seed ^ 0x5eed_5a1e),
            p,
            phase: Phase::Schema,
            done: 0,
            next_customer: 1,
            next_order: 1,
            txns: 0,
        }
    }

    /// Transactions handed out so far.
    pub fn txns(&self) -> u64 {
        self.txns
    }

    fn blob(&mut self, big_pct: u64) -> Value {
        let r = self.rng.below(100);
        let n = if r < 10 {
            return Value::Null;
        } else if r < 65 {
            self.rng.below(64)
        } else if r < 100 - big_pct {
            self.rng.range(100, 1500)
        } else {
            // Larger than a page: an overflow chain.
            self.rng.range(4500, 20000)
        };
        Value::Blob(self.rng.bytes(n as usize))
    }

    fn name(&mut self) -> Value {
        let first = self.rng.pick(&FIRST);
        let last = self.rng.pick(&LAST);
        let n = self.rng.below(1000);
        Value::Text(format!("{first} {last} {n}"))
    }

    fn real(&mut self) -> Value {
        Value::Real((self.rng.below(2_000_000) as f64 - 1_000_000.0) / 100.0)
    }

    /// Integers of every width SQLite stores (1 to 8 bytes), both signs.
    fn int(&mut self) -> Value {
        let shift = self.rng.below(64);
        Value::Int((self.rng.next() as i64) >> shift)
    }

    fn customer_id(&mut self) -> Value {
        Value::Int(self.rng.range(1, self.next_customer + 1) as i64)
    }

    fn order_id(&mut self) -> Value {
        Value::Int(self.rng.range(1, self.next_order + 1) as i64)
    }

    fn kv_key(&mut self) -> Value {
        Value::Text(format!("key:{:06}", self.rng.below(self.p.rows * 2)))
    }

    fn insert_customer(&mut self, out: &mut Vec<Stmt>) {
        let id = self.next_customer;
        self.next_customer += 1;
        let name = self.name();
        let email = Value::Text(format!("user{id}.{}@example.com", self.rng.below(100)));
        let balance = self.real();
        let score = self.int();
        let photo = self.blob(10);
        out.push(stmt(
            "INSERT INTO customers(id, name, email, balance, score, photo) VALUES (?, ?, ?, ?, ?, ?)",
            alloc::vec![Value::Int(id as i64), name, email, balance, score, photo],
        ));
    }

    fn note(&mut self) -> Value {
        let r = self.rng.below(100);
        if r < 30 {
            Value::Null
        } else if r < 90 {
            let n = self.rng.range(10, 80) as usize;
            Value::Text(self.rng.text(n))
        } else {
            let n = self.rng.range(5000, 12000) as usize;
            Value::Text(self.rng.text(n))
        }
    }

    fn insert_order(&mut self, out: &mut Vec<Stmt>) {
        let id = self.next_order;
        self.next_order += 1;
        let customer = self.customer_id();
        let amount = self.real();
        let note = self.note();
        let payload = if self.rng.below(2) == 0 {
            Value::Null
        } else if self.rng.below(20) == 0 {
            Value::Blob(self.rng.bytes(9000))
        } else {
            let n = self.rng.below(300) as usize;
            Value::Blob(self.rng.bytes(n))
        };
        out.push(stmt(
            "INSERT INTO orders(id, customer_id, amount, note, payload) VALUES (?, ?, ?, ?, ?)",
            alloc::vec![Value::Int(id as i64), customer, amount, note, payload],
        ));
    }

    fn upsert_kv(&mut self, out: &mut Vec<Stmt>) {
        let k = self.kv_key();
        let n = if self.rng.below(100) < 8 {
            self.rng.range(5000, 9000)
        } else {
            self.rng.below(200)
        };
        let v = Value::Blob(self.rng.bytes(n as usize));
        let num = Value::Int(self.rng.below(1000) as i64);
        out.push(stmt(
            "INSERT OR REPLACE INTO kv(k, v, n) VALUES (?, ?, ?)",
            alloc::vec![k, v, num],
        ));
    }

    fn audit(&mut self, out: &mut Vec<Stmt>, what: &str) {
        out.push(stmt(
            "INSERT INTO audit(at, what) VALUES (?, ?)",
            alloc::vec![
                Value::Int(self.txns as i64),
                Value::Text(String::from(what))
            ],
        ));
    }

    /// One random operation of the mixed phases.
    fn mixed_op(&mut self, out: &mut Vec<Stmt>, after_alter: bool) {
        let r = self.rng.below(100);
        match r {
            0..=24 => {
                let (b, s, id) = (self.real(), self.rng.below(100) as i64, self.customer_id());
                out.push(stmt(
                    "UPDATE customers SET balance = ?, score = score + ? WHERE id = ?",
                    alloc::vec![b, Value::Int(s), id],
                ));
            }
            25..=34 => {
                let (photo, id) = (self.blob(25), self.customer_id());
                out.push(stmt(
                    "UPDATE customers SET photo = ? WHERE id = ?",
                    alloc::vec![photo, id],
                ));
            }
            35..=39 => {
                let (name, id) = (self.name(), self.customer_id());
                out.push(stmt(
                    "UPDATE customers SET name = ?, email = NULL WHERE id = ?",
                    alloc::vec![name, id],
                ));
            }
            40..=51 => {
                let id = self.customer_id();
                out.push(stmt(
                    "DELETE FROM customers WHERE id = ?",
                    alloc::vec![id.clone()],
                ));
                out.push(stmt(
                    "DELETE FROM orders WHERE customer_id = ?",
                    alloc::vec![id],
                ));
            }
            52..=64 => self.insert_customer(out),
            65..=74 => self.insert_order(out),
            75..=81 => {
                let (a, note, id) = (self.real(), self.note(), self.order_id());
                out.push(stmt(
                    "UPDATE orders SET amount = amount * 1.5 + ?, note = ? WHERE id = ?",
                    alloc::vec![a, note, id],
                ));
            }
            82..=89 => self.upsert_kv(out),
            90..=94 => {
                let k = self.kv_key();
                out.push(stmt("DELETE FROM kv WHERE k = ?", alloc::vec![k]));
            }
            _ if after_alter && r >= 97 => {
                let (id, tag) = (self.customer_id(), self.rng.pick(&WORDS));
                out.push(stmt(
                    "INSERT OR IGNORE INTO tags(customer_id, tag, weight) VALUES (?, ?, ?)",
                    alloc::vec![id, Value::Text(String::from(tag)), self.real()],
                ));
                let (tier, id) = (self.rng.below(5) as i64, self.customer_id());
                out.push(stmt(
                    "UPDATE customers SET tier = ? WHERE id = ?",
                    alloc::vec![Value::Int(tier), id],
                ));
            }
            _ => {
                let id = self.order_id();
                out.push(stmt("DELETE FROM orders WHERE id = ?", alloc::vec![id]));
            }
        }
    }

    /// The next transaction's statements, or None at the end.
    pub fn next_txn(&mut self) -> Option<Vec<Stmt>> {
        let mut out = Vec::new();
        let (rows, txn) = (self.p.rows, self.p.txn);
        match self.phase {
            Phase::Schema => {
                for sql in [
                    "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, balance REAL, score INTEGER, photo BLOB)",
                    "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount REAL, note TEXT, payload BLOB)",
                    "CREATE INDEX orders_by_customer ON orders(customer_id)",
                    "CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB, n INTEGER) WITHOUT ROWID",
                    "CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, what TEXT NOT NULL)",
                ] {
                    out.push(stmt(sql, Vec::new()));
                }
                self.phase = Phase::Load;
            }
            Phase::Load => {
                let n = txn.min(rows - self.done);
                for _ in 0..n {
                    self.insert_customer(&mut out);
                    if self.rng.below(2) == 0 {
                        self.insert_order(&mut out);
                    }
                    if self.rng.below(4) == 0 {
                        self.upsert_kv(&mut out);
                    }
                }
                self.audit(&mut out, "load");
                self.done += n;
                if self.done >= rows {
                    self.done = 0;
                    self.phase = Phase::Mixed;
                }
            }
            Phase::Mixed | Phase::Mixed2 => {
                let after_alter = matches!(self.phase, Phase::Mixed2);
                let total = if after_alter { (rows / 4).max(1) } else { rows };
                let n = txn.min(total - self.done);
                for _ in 0..n {
                    self.mixed_op(&mut out, after_alter);
                }
                self.audit(&mut out, if after_alter { "mixed2" } else { "mixed" });
                self.done += n;
                if self.done >= total {
                    self.done = 0;
                    self.phase = if after_alter {
                        Phase::Done
                    } else {
                        Phase::Alter(0)
                    };
                }
            }
            Phase::Alter(step) => {
                match step {
                    0 => out.push(stmt(
                        "ALTER TABLE customers ADD COLUMN tier INTEGER NOT NULL DEFAULT 0",
                        Vec::new(),
                    )),
                    1 => out.push(stmt(
                        "UPDATE customers SET tier = (id * 7) % 5 WHERE id % 3 = 0",
                        Vec::new(),
                    )),
                    2 => {
                        out.push(stmt(
                            "CREATE TABLE scratch(id INTEGER PRIMARY KEY, junk BLOB, label TEXT)",
                            Vec::new(),
                        ));
                        for i in 0..(rows / 8).max(10) {
                            let n = self.rng.range(2000, 6000) as usize;
                            let junk = Value::Blob(self.rng.bytes(n));
                            let label = Value::Text(self.rng.text(40));
                            out.push(stmt(
                                "INSERT INTO scratch(id, junk, label) VALUES (?, ?, ?)",
                                alloc::vec![Value::Int(i as i64 + 1), junk, label],
                            ));
                        }
                    }
                    3 => {
                        out.push(stmt(
                            "ALTER TABLE orders ADD COLUMN status TEXT DEFAULT 'new'",
                            Vec::new(),
                        ));
                        out.push(stmt(
                            "UPDATE orders SET status = 'shipped' WHERE id % 4 = 1",
                            Vec::new(),
                        ));
                    }
                    4 => out.push(stmt("DROP TABLE scratch", Vec::new())),
                    5 => {
                        out.push(stmt(
                            "CREATE TABLE tags(customer_id INTEGER, tag TEXT, weight REAL, PRIMARY KEY(customer_id, tag)) WITHOUT ROWID",
                            Vec::new(),
                        ));
                        out.push(stmt("DROP INDEX orders_by_customer", Vec::new()));
                        out.push(stmt(
                            "CREATE INDEX orders_by_status ON orders(status, amount)",
                            Vec::new(),
                        ));
                        out.push(stmt(
                            "CREATE INDEX customers_by_tier ON customers(tier)",
                            Vec::new(),
                        ));
                    }
                    _ => unreachable!(),
                }
                self.audit(&mut out, "schema");
                self.phase = if step == 5 {
                    Phase::Bulk
                } else {
                    Phase::Alter(step + 1)
                };
            }
            Phase::Bulk => {
                for sql in [
                    "DELETE FROM orders WHERE id % 3 = 0",
                    "DELETE FROM kv WHERE n % 4 = 0",
                    "DELETE FROM customers WHERE id % 11 = 0 AND tier = 0",
                ] {
                    out.push(stmt(sql, Vec::new()));
                }
                self.audit(&mut out, "bulk");
                self.phase = Phase::Mixed2;
            }
            Phase::Done => return None,
        }
        self.txns += 1;
        Some(out)
    }
}
