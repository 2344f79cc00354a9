#!/usr/bin/env python3
"""Writes the seed inputs the fuzz corpora started from (deterministic).

usage: python3 introspection/fuzz/seeds.py OUTDIR
Writes OUTDIR/{sqlite,json,kv,hint_stream}/seed-*. Each file has the
layout its target reads (see introspection::decode::fuzz_entry and
hint_proto::fuzz_entry): a mode byte first, then the decoder input(s).
"""
import json
import os
import sqlite3
import struct
import sys
import tempfile
import zlib

out = sys.argv[1]


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def u16split(a, b):
    """fuzz_entry::split_u16 layout: u16 LE length of `a`, a, b."""
    return struct.pack("<H", len(a)) + a + b


# --- SQLite: small 512-byte-page databases, WAL pairs, version pairs ----
SQLS = [
    "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL, d BLOB);"
    "INSERT INTO t VALUES(1,'x',1.5,x'00ff'),(2,NULL,-2.25,NULL),(3,'yy',0,zeroblob(3));",
    "CREATE TABLE t(a TEXT PRIMARY KEY, b INT) WITHOUT ROWID;"
    "INSERT INTO t VALUES('k1',1),('k2',2),('k3',9223372036854775807);",
    "CREATE TABLE t(a, b DEFAULT 'd', c INT DEFAULT 7);CREATE INDEX i ON t(a);"
    "INSERT INTO t(a) VALUES(1),('two'),(3.5);",
    "CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT);"
    "INSERT INTO big VALUES(1, printf('%.1500c','o'));"
    "INSERT INTO big VALUES(2, 'short');",
    "CREATE TABLE t(a INTEGER PRIMARY KEY, b);"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<60)"
    " INSERT INTO t SELECT i, i*i FROM n;",
    "CREATE TABLE t(a, b);CREATE VIEW v AS SELECT a FROM t;"
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;"
    "INSERT INTO t VALUES(-1, x'deadbeef');",
]


def db_bytes(sql, enc="UTF-8", update=None):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.db")
        c = sqlite3.connect(p)
        c.executescript(f"PRAGMA page_size=512; PRAGMA encoding='{enc}';" + sql)
        c.commit()
        c.close()
        before = open(p, "rb").read()
        if update is None:
            return before
        c = sqlite3.connect(p)
        c.executescript(update)
        c.commit()
        c.close()
        return before, open(p, "rb").read()


def wal_pair(sql, more):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.db")
        c = sqlite3.connect(p)
        c.executescript("PRAGMA page_size=512; PRAGMA journal_mode=WAL;"
                        "PRAGMA wal_autocheckpoint=0;" + sql)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.executescript(more)
        c.commit()
        db = open(p, "rb").read()
        wal = open(p + "-wal", "rb").read()
        c.close()
        return db, wal


for i, sql in enumerate(SQLS):
    put("sqlite", f"db{i}", bytes([0]) + db_bytes(sql))
    put("sqlite", f"db{i}-keyed", bytes([4 * 3]) + db_bytes(sql))
put("sqlite", "utf16", bytes([0]) + db_bytes(SQLS[0], "UTF-16le"))
put("sqlite", "utf16be", bytes([0]) + db_bytes(SQLS[1], "UTF-16be"))
db, wal = wal_pair(SQLS[0], "INSERT INTO t VALUES(4,'w',4.0,NULL); DELETE FROM t WHERE a=1;")
put("sqlite", "wal0", bytes([1]) + u16split(db, wal))
db, wal = wal_pair(SQLS[4], "UPDATE t SET b=0 WHERE a%7=0;")
put("sqlite", "wal1", bytes([1]) + u16split(db, wal))
a, b = db_bytes(SQLS[0], update="UPDATE t SET b='z' WHERE a=2; INSERT INTO t VALUES(9,'n',9,x'09');")
put("sqlite", "pair0", bytes([2]) + u16split(a, b))
a, b = db_bytes(SQLS[1], update="ALTER TABLE t ADD COLUMN c DEFAULT 5; DELETE FROM t WHERE a='k2';")
put("sqlite", "pair1", bytes([2]) + u16split(a, b))

# --- JSON: old 0xFF new, mode byte picks the record hints ---------------
DOCS = [
    {"a": 1, "b": {"c": [1, 2, {"d": None}]}, "x/y~": True},
    {"r": [{"id": 1, "n": "A"}, {"id": 2, "n": "B"}], "v": 1},
    {"r": {"k1": {"k": 1}, "k2": {"k": [2]}}, "v": "é😀\n"},
    [1, 2.5, -0.0, 1e300, "s", False, None, {}, []],
]
texts = [json.dumps(d).encode() for d in DOCS] + [
    b'{"n":[0,-0,1.0,1e0,10e-1,123456789012345678901234567890,1E+400,-9223372036854775808]}',
    b'"\\u00e9\\ud83d\\ude00\\"\\\\\\/\\b\\f\\n\\r\\t"',
    b'[[[[[[[[[[{"a":[{"b":{}}]}]]]]]]]]]]\x00\x00',
    b' \t\n{"a" : [ true , false , null ] }\r\n',
]
for i, t in enumerate(texts):
    put("json", f"doc{i}", bytes([i % 3]) + t)
for i in range(len(texts) - 1):
    put("json", f"pair{i}", bytes([(i + 1) % 3]) + texts[i] + b"\xff" + texts[i + 1])
put("json", "records", bytes([1]) + texts[1] + b"\xff"
    + json.dumps({"r": [{"id": 2, "n": "C"}, {"id": 3}, {"x": 1}], "v": 2}).encode())
put("json", "records-k", bytes([2]) + texts[2] + b"\xff"
    + json.dumps({"r": [{"k": "k1"}, {"k": {"o": 1}}, 5]}).encode())


# --- KV: VMMKV001 logs ---------------------------------------------------
def kv_rec(op, k, v=b""):
    body = bytes([op]) + struct.pack("<II", len(k), len(v)) + k + v
    return struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))


def kv_log(gen, recs, tail=b""):
    return b"VMMKV001" + struct.pack("<Q", gen) + b"".join(recs) + tail


l1 = kv_log(1, [kv_rec(1, b"a", b"1"), kv_rec(1, b"b", b"\xff\x00"), kv_rec(2, b"a")])
l2 = kv_log(1, [kv_rec(1, b"a", b"1"), kv_rec(1, b"b", b"2"), kv_rec(1, b"\x80k", b"v")],
            b"\x00" * 40)
l3 = kv_log(2, [kv_rec(1, b"b", b"2")], kv_rec(1, b"stale", b"x")[:-1] + b"\x00")
for i, (a, b) in enumerate([(b"", l1), (l1, l2), (l2, l3), (l3, b"\x00" * 64)]):
    put("kv", f"pair{i}", b"\x00" + u16split(a, b))


# --- hint protocol: streams of messages ---------------------------------
def hint(kind, payload):
    h = b"VH" + bytes([1, kind]) + struct.pack("<I", len(payload)) + payload
    return h + struct.pack("<I", zlib.crc32(h))


msgs = [
    hint(1, struct.pack("<IIBB", 7, 7, 1, 1) + b"/data/app.db"),
    hint(1, struct.pack("<IIBB", 8, 7, 1, 3) + b"/data/app.db-wal"),
    hint(2, struct.pack("<I", 7) + struct.pack("<QQQ", 0, 2048, 4096)
         + struct.pack("<QQQ", 4096, 100, 512)),
    hint(2, struct.pack("<I", 7)),
    hint(3, struct.pack("<IQB", 7, 8192, 1)),
    hint(4, struct.pack("<I", 7) + b"t=a,b;u=c"),
    hint(5, struct.pack("<I", 7)),
    hint(9, b"unknown kind"),
]
for i, m in enumerate(msgs):
    put("hint_stream", f"msg{i}", m)
put("hint_stream", "stream", b"".join(msgs))
put("hint_stream", "noisy", b"\x11garbageV" + msgs[0] + b"VHVH\x02" + msgs[4][:-1] + b"x"
    + msgs[5] + msgs[2][:20])
