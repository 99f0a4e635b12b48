//! Contiguous log bytes held as the pieces they were read in (read-ahead
//! pieces, written chunks, the tail buffer), so a read does not join them
//! with a copy: a batch is sliced out of its piece, and only a batch that
//! straddles two pieces is copied.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Bytes `[0, len)` as consecutive non-empty pieces.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rope {
    /// Each piece with the rope position it starts at.
    pieces: Vec<(usize, Bytes)>,
    len: usize,
}

impl From<Bytes> for Rope {
    fn from(b: Bytes) -> Self {
        let mut r = Rope::default();
        r.push(b);
        r
    }
}

impl Rope {
    pub(crate) fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        let n = b.len();
        self.pieces.push((self.len, b));
        self.len = self.len.saturating_add(n);
    }

    pub(crate) fn append(&mut self, other: Rope) {
        for (_, b) in other.pieces {
            self.push(b);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the piece holding position `at` (< len).
    fn piece_at(&self, at: usize) -> usize {
        self.pieces
            .partition_point(|(start, _)| *start <= at)
            .saturating_sub(1)
    }

    /// Bytes `range` (clamped to the rope): a slice of its piece when it
    /// lies in one, else a copy of just this range.
    pub(crate) fn slice(&self, range: Range<usize>) -> Bytes {
        let end = range.end.min(self.len);
        let from = range.start.min(end);
        if from == end {
            return Bytes::new();
        }
        let i = self.piece_at(from);
        if let Some((start, b)) = self.pieces.get(i) {
            let start = *start;
            if end <= start.saturating_add(b.len()) {
                return b.slice(from.saturating_sub(start)..end.saturating_sub(start));
            }
        }
        let mut out = BytesMut::with_capacity(end.saturating_sub(from));
        self.copy_into(from, end, &mut out);
        out.freeze()
    }

    /// Bytes `range` (clamped) as slices of the pieces it spans: no copy.
    pub(crate) fn slices(&self, range: Range<usize>) -> Vec<Bytes> {
        let end = range.end.min(self.len);
        let from = range.start.min(end);
        let mut out = Vec::new();
        for (start, b) in self.pieces.iter().skip(self.piece_at(from)) {
            if *start >= end {
                break;
            }
            let s = from.saturating_sub(*start).min(b.len());
            let e = end.saturating_sub(*start).min(b.len());
            if s < e {
                out.push(b.slice(s..e));
            }
        }
        out
    }

    /// Bytes `[from, from + n)` (clamped) to read in place: borrowed when
    /// they lie in one piece, else copied.
    pub(crate) fn peek(&self, from: usize, n: usize) -> Cow<'_, [u8]> {
        let end = from.saturating_add(n).min(self.len);
        let from = from.min(end);
        if from == end {
            return Cow::Borrowed(&[]);
        }
        let i = self.piece_at(from);
        if let Some((start, b)) = self.pieces.get(i) {
            let (s, e) = (from.saturating_sub(*start), end.saturating_sub(*start));
            if let Some(v) = b.get(s..e) {
                return Cow::Borrowed(v);
            }
        }
        let mut out = BytesMut::with_capacity(end.saturating_sub(from));
        self.copy_into(from, end, &mut out);
        Cow::Owned(out.to_vec())
    }

    /// The rope from `from` on, sharing its pieces.
    pub(crate) fn suffix(&self, from: usize) -> Rope {
        let mut out = Rope::default();
        if from >= self.len {
            return out;
        }
        let i = self.piece_at(from);
        for (start, b) in self.pieces.iter().skip(i) {
            out.push(b.slice(from.saturating_sub(*start).min(b.len())..));
        }
        out
    }

    fn copy_into(&self, from: usize, end: usize, out: &mut BytesMut) {
        for (start, b) in self.pieces.iter().skip(self.piece_at(from)) {
            if *start >= end {
                break;
            }
            let s = from.saturating_sub(*start).min(b.len());
            let e = end.saturating_sub(*start).min(b.len());
            if let Some(v) = b.get(s..e) {
                out.extend_from_slice(v);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn rope(parts: &[&[u8]]) -> Rope {
        let mut r = Rope::default();
        for p in parts {
            r.push(Bytes::copy_from_slice(p));
        }
        r
    }

    #[test]
    fn slices_within_a_piece_share_it_and_across_pieces_copy_only_the_range() {
        let r = rope(&[b"abcd", b"", b"efg", b"hij"]);
        assert_eq!(r.len(), 10);
        let inside = r.slice(4..7);
        assert_eq!(&inside[..], b"efg");
        assert_eq!(
            inside.as_ptr(),
            r.pieces[1].1.as_ptr(),
            "a slice inside one piece points into it"
        );
        assert_eq!(&r.slice(2..9)[..], b"cdefghi");
        let parts = r.slices(2..9);
        assert_eq!(
            parts.iter().map(|p| &p[..]).collect::<Vec<_>>(),
            [&b"cd"[..], b"efg", b"hi"]
        );
        assert_eq!(
            parts[1].as_ptr(),
            r.pieces[1].1.as_ptr(),
            "parts point into the pieces"
        );
        assert!(r.slices(4..4).is_empty());
        assert_eq!(&r.slice(8..100)[..], b"ij");
        assert!(r.slice(10..12).is_empty());
        assert_eq!(&r.peek(3, 2)[..], b"de");
        assert!(matches!(r.peek(4, 3), Cow::Borrowed(b"efg")));
        let s = r.suffix(5);
        assert_eq!((s.len(), &s.slice(0..5)[..]), (5, &b"fghij"[..]));
        let mut joined = rope(&[b"ab"]);
        joined.append(s);
        assert_eq!(&joined.slice(0..7)[..], b"abfghij");
    }
}
