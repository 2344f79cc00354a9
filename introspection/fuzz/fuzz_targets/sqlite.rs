//! See `introspection::decode::fuzz_entry::sqlite` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| introspection::decode::fuzz_entry::sqlite(data));
