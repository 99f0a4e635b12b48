//! The durable log: what is appended is there after a reopen, a torn tail
//! is cut, an overwritten suffix stays overwritten, a snapshot bounds it.

use super::*;

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    let mut e = Entry {
        index,
        term,
        ..Default::default()
    };
    e.set_data(data.to_vec().into());
    e
}

fn indexes_and_terms(s: &DiskStorage) -> Vec<(u64, u64)> {
    s.entries_from(0)
        .unwrap()
        .iter()
        .map(|e| (e.index, e.term))
        .collect()
}

#[test]
fn entries_and_hard_state_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = DiskStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        let hs = HardState {
            term: 1,
            vote: 2,
            commit: 2,
            ..Default::default()
        };
        s.set_hard_state(&hs).unwrap();
    }
    let changed = DiskStorage::open(dir.path(), &[9]).err().unwrap();
    assert!(
        matches!(changed, StoreError::VotersChanged { .. }),
        "{changed}"
    );
    let s = DiskStorage::open(dir.path(), &[3, 2, 1]).unwrap();
    assert_eq!(indexes_and_terms(&s), vec![(1, 1), (2, 1)]);
    let state = s.initial_state().unwrap();
    assert_eq!((state.hard_state.term, state.hard_state.vote), (1, 2));
    assert_eq!(state.hard_state.commit, 2);
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
}

#[test]
fn an_overwritten_suffix_stays_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")])
            .unwrap();
        s.append(&[entry(2, 2, b"x")]).unwrap();
        assert_eq!(indexes_and_terms(&s), vec![(1, 1), (2, 2)]);
    }
    let s = DiskStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(indexes_and_terms(&s), vec![(1, 1), (2, 2)]);
}

#[test]
fn a_torn_tail_is_cut_and_the_prefix_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
    }
    let path = dir.path().join(LOG_FILE);
    let full = fs::read(&path).unwrap();
    // Tear the last frame, then flip a bit in it instead: both lose entry 2 only.
    fs::write(&path, &full[..full.len() - 3]).unwrap();
    let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(indexes_and_terms(&s), vec![(1, 1)]);
    s.append(&[entry(2, 1, b"again")]).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(indexes_and_terms(&s), vec![(1, 1), (2, 1)]);
    drop(s);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let s = DiskStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(indexes_and_terms(&s), vec![(1, 1)]);
}

#[test]
fn a_snapshot_bounds_the_log_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let mut s = DiskStorage::open(dir.path(), &[1]).unwrap();
        let many: Vec<Entry> = (1..=100).map(|i| entry(i, 1, &[0u8; 100])).collect();
        s.append(&many).unwrap();
        before = s.log_bytes();
        s.compact(90, b"image".to_vec()).unwrap();
        assert!(s.log_bytes() < before / 5, "{} of {before}", s.log_bytes());
        assert_eq!(s.first_index().unwrap(), 90);
        assert!(matches!(
            s.term(50),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 90);
        assert_eq!(snap.get_data(), b"image");
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1]);
    }
    let s = DiskStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(s.first_index().unwrap(), 91);
    assert_eq!(s.last_index().unwrap(), 100);
    assert_eq!(s.term(90).unwrap(), 1);
    assert_eq!(s.stored_snapshot().get_data(), b"image");
}

#[test]
fn a_received_snapshot_replaces_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), &[1, 2]).unwrap();
    s.append(&[entry(1, 1, b"a")]).unwrap();
    let mut snap = Snapshot::default();
    snap.set_data(b"leader's image".to_vec().into());
    snap.mut_metadata().index = 50;
    snap.mut_metadata().term = 3;
    snap.mut_metadata()
        .set_conf_state(ConfState::from((vec![1, 2], vec![])));
    s.apply_snapshot(snap).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path(), &[1, 2]).unwrap();
    assert_eq!(s.last_index().unwrap(), 50);
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 50);
    assert_eq!(s.stored_snapshot().get_data(), b"leader's image");
}
