//! A request frame (after its size prefix) through the broker's decoding:
//! header, API key and version against what ApiVersions advertises, then
//! the body as the type the dispatcher decodes it as. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The broker's allocator: a hostile array length reserves address space,
// not memory, as in the shipped binary.
#[global_allocator]
static ALLOCATOR: strom_server::alloc::HugeMapAllocator = strom_server::alloc::HugeMapAllocator;

fuzz_target!(|data: &[u8]| {
    let _ = strom_server::api::decode_frame(bytes::Bytes::copy_from_slice(data));
});
