//! Replays the fuzz targets' inputs through the same checks in the
//! ordinary test run: every file in `fuzz/regressions/<target>/` (inputs
//! that once crashed, kept forever) and the seed corpus
//! `fuzz/corpus/<target>/`, for the engine's targets `batch` and `recover`.

use std::path::PathBuf;

use strom_engine::fuzzing::{check_append_validation, check_recovery};

/// The files of `fuzz/<kind>/<target>/`, sorted by name.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read a fuzz input");
            (p, bytes)
        })
        .collect()
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["regressions", "corpus"] {
        for (path, bytes) in inputs(kind, target) {
            eprintln!("replaying {}", path.display());
            check(&bytes);
            n += 1;
        }
    }
    n
}

#[test]
fn batch_inputs_replay() {
    assert!(
        replay("batch", check_append_validation) > 0,
        "no batch inputs"
    );
}

#[test]
fn recover_inputs_replay() {
    assert!(replay("recover", check_recovery) > 0, "no recover inputs");
}
