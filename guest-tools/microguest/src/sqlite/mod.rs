//! Real SQLite (the amalgamation shipped in `libsqlite3-sys`, compiled
//! freestanding: see `.cargo/config.toml`) and a small safe wrapper.
//!
//! SQLite needs only `libc.rs`, `mem.rs` and the allocator of `heap.rs`
//! from us, plus `sqlite3_os_init` registering the VFS of `vfs/mod.rs`.
pub mod vfs;

use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_int, CStr};
use core::ptr::null_mut;

use libsqlite3_sys as ffi;

use crate::workloads::spec::Value;

/// An SQLite error: result code and message.
#[derive(Debug)]
pub struct Error {
    pub code: c_int,
    pub msg: String,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

pub struct Db {
    raw: *mut ffi::sqlite3,
}

pub struct Stmt<'db> {
    raw: *mut ffi::sqlite3_stmt,
    db: &'db Db,
}

impl Db {
    /// Opens (creating if needed) `name` on the VFS of `vfs/mod.rs`.
    pub fn open(name: &CStr) -> Result<Self, Error> {
        let mut raw = null_mut();
        // SAFETY: valid C strings; `raw` receives the handle.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                name.as_ptr(),
                &mut raw,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
                vfs::VFS_NAME.as_ptr(),
            )
        };
        let db = Self { raw };
        if rc != ffi::SQLITE_OK {
            return Err(db.error(rc));
        }
        Ok(db)
    }

    fn error(&self, code: c_int) -> Error {
        let msg = if self.raw.is_null() {
            // SAFETY: sqlite3_errstr returns a static string.
            unsafe { CStr::from_ptr(ffi::sqlite3_errstr(code)) }
        } else {
            // SAFETY: valid handle; the message lives until the next call.
            unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.raw)) }
        };
        Error {
            code,
            msg: String::from(msg.to_str().unwrap_or("?")),
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>, Error> {
        let mut raw = null_mut();
        // SAFETY: the SQL is passed with its length; no NUL needed.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                self.raw,
                sql.as_ptr().cast(),
                sql.len() as c_int,
                &mut raw,
                null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(Stmt { raw, db: self })
    }

    /// Runs one statement with `params`, discarding any rows.
    pub fn run(&self, sql: &str, params: &[Value]) -> Result<(), Error> {
        let mut st = self.prepare(sql)?;
        st.bind(params)?;
        while st.step()? {}
        Ok(())
    }

    /// Runs one statement and returns all its rows.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, Error> {
        let mut st = self.prepare(sql)?;
        st.bind(params)?;
        let mut rows = Vec::new();
        while st.step()? {
            rows.push(st.row());
        }
        Ok(rows)
    }

    /// The first column of the first row, if it is an integer.
    pub fn query_i64(&self, sql: &str) -> Result<i64, Error> {
        match self.query(sql, &[])?.first().and_then(|r| r.first()) {
            Some(Value::Int(i)) => Ok(*i),
            _ => Err(Error {
                code: ffi::SQLITE_MISMATCH,
                msg: String::from("expected an integer"),
            }),
        }
    }

    /// Closes the connection (in WAL mode this checkpoints and deletes the
    /// WAL).
    pub fn close(mut self) -> Result<(), Error> {
        // SAFETY: every statement was finalized (Stmt borrows Db).
        let rc = unsafe { ffi::sqlite3_close(self.raw) };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        self.raw = null_mut();
        Ok(())
    }

    /// Leaves the connection open for good: what a crash leaves behind.
    pub fn abandon(self) {
        core::mem::forget(self);
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: valid handle, statements finalized.
            unsafe { ffi::sqlite3_close(self.raw) };
        }
    }
}

impl Stmt<'_> {
    pub fn bind(&mut self, params: &[Value]) -> Result<(), Error> {
        for (i, v) in params.iter().enumerate() {
            let col = i as c_int + 1;
            // SAFETY: valid statement; SQLITE_TRANSIENT makes SQLite copy.
            let rc = unsafe {
                match v {
                    Value::Null => ffi::sqlite3_bind_null(self.raw, col),
                    Value::Int(x) => ffi::sqlite3_bind_int64(self.raw, col, *x),
                    Value::Real(x) => ffi::sqlite3_bind_double(self.raw, col, *x),
                    Value::Text(s) => ffi::sqlite3_bind_text(
                        self.raw,
                        col,
                        s.as_ptr().cast(),
                        s.len() as c_int,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    Value::Blob(b) => ffi::sqlite3_bind_blob(
                        self.raw,
                        col,
                        b.as_ptr().cast(),
                        b.len() as c_int,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.db.error(rc));
            }
        }
        Ok(())
    }

    /// Steps once: true when a row is ready, false when done.
    pub fn step(&mut self) -> Result<bool, Error> {
        // SAFETY: valid statement.
        match unsafe { ffi::sqlite3_step(self.raw) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(self.db.error(rc)),
        }
    }

    /// The current row.
    pub fn row(&self) -> Vec<Value> {
        // SAFETY: valid statement positioned on a row; pointers returned by
        // sqlite3_column_* are valid for the given byte counts until the
        // next step.
        unsafe {
            let n = ffi::sqlite3_column_count(self.raw);
            (0..n)
                .map(|i| match ffi::sqlite3_column_type(self.raw, i) {
                    ffi::SQLITE_INTEGER => Value::Int(ffi::sqlite3_column_int64(self.raw, i)),
                    ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_column_double(self.raw, i)),
                    ffi::SQLITE_TEXT => {
                        let p = ffi::sqlite3_column_text(self.raw, i);
                        let len = ffi::sqlite3_column_bytes(self.raw, i) as usize;
                        let bytes = if p.is_null() {
                            &[][..]
                        } else {
                            core::slice::from_raw_parts(p, len)
                        };
                        Value::Text(String::from_utf8_lossy(bytes).into_owned())
                    }
                    ffi::SQLITE_BLOB => {
                        let p = ffi::sqlite3_column_blob(self.raw, i) as *const u8;
                        let len = ffi::sqlite3_column_bytes(self.raw, i) as usize;
                        if p.is_null() {
                            Value::Blob(Vec::new())
                        } else {
                            Value::Blob(core::slice::from_raw_parts(p, len).to_vec())
                        }
                    }
                    _ => Value::Null,
                })
                .collect()
        }
    }
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: valid statement, finalized once.
        unsafe { ffi::sqlite3_finalize(self.raw) };
    }
}
