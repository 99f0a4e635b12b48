//! Recovery from arbitrary segment, index, snapshot and marker files on the
//! simulated disk: `strom_engine::fuzzing::check_recovery`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strom_engine::fuzzing::check_recovery(data);
});
