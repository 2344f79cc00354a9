//! See `introspection::decode::fuzz_entry::leveldb` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| introspection::decode::fuzz_entry::leveldb(data));
