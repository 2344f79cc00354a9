//! See `hint_proto::fuzz_entry::hint_stream` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hint_proto::fuzz_entry::hint_stream(data));
