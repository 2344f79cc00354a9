//! See `introspection::decode::fuzz_entry::kv` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| introspection::decode::fuzz_entry::kv(data));
