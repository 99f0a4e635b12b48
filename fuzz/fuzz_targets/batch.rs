//! Produce-batch validation and the append behind it:
//! `strom_engine::fuzzing::check_append_validation`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strom_engine::fuzzing::check_append_validation(data);
});
