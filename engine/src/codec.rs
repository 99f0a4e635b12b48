//! The codecs of a RecordBatch's records (attributes bits 0-2), for the two
//! places that read records: the log cleaner and the keyless check.
//!
//! | codec | Kafka's framing | read | written |
//! |---|---|---|---|
//! | 1 gzip | a gzip member | flate2 | flate2, default level |
//! | 2 snappy | the Java client's xerial frame (magic, version, then length-prefixed blocks), or one raw block (librdkafka) | both | xerial, as the Java client |
//! | 3 lz4 | the LZ4 frame format (KIP-57: header checksum right) | lz4_flex | lz4_flex, independent 64 KiB blocks |
//! | 4 zstd | a zstd frame | zstd | zstd, level 3 |
//!
//! Every reader stops at [`MAX_INFLATED_BYTES`]: a batch that inflates past
//! it (a compression bomb) is `TooLarge`, and nothing allocates more.

use std::io::{Read, Write};

/// The most bytes a batch's records may inflate to: a compression bomb stops here
/// (Kafka's own limit is the topic's max.message.bytes for the batch; the
/// inflated size is bounded separately so a shard never allocates without
/// limit).
pub const MAX_INFLATED_BYTES: u64 = 64 << 20;

/// Why a batch's records could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Compressed with a codec the engine does not inflate.
    Codec(i16),
    /// The records do not parse (lengths past the end, a bad varint).
    Malformed,
    /// Inflates past [`MAX_INFLATED_BYTES`].
    TooLarge,
}

pub const CODEC_NONE: i16 = 0;
pub const CODEC_GZIP: i16 = 1;
pub const CODEC_SNAPPY: i16 = 2;
pub const CODEC_LZ4: i16 = 3;
pub const CODEC_ZSTD: i16 = 4;

/// The xerial snappy stream header: magic, then version 1 and minimum
/// compatible version 1, as `SnappyOutputStream` writes it.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
/// Bytes per block of a xerial stream (the Java client's 32 KiB).
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// The records bytes of `body`, compressed with `codec`.
pub fn inflate(codec: i16, body: &[u8]) -> Result<Vec<u8>, Unreadable> {
    match codec {
        CODEC_NONE => Ok(body.to_vec()),
        CODEC_GZIP => read_bounded(flate2::read::GzDecoder::new(body)),
        CODEC_SNAPPY => inflate_snappy(body),
        CODEC_LZ4 => read_bounded(lz4_flex::frame::FrameDecoder::new(body)),
        CODEC_ZSTD => {
            let decoder =
                zstd::stream::read::Decoder::new(body).map_err(|_| Unreadable::Malformed)?;
            read_bounded(decoder)
        }
        codec => Err(Unreadable::Codec(codec)),
    }
}

/// `records` compressed with `codec`, as Kafka's clients frame it.
pub fn deflate(codec: i16, records: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let failed = |_| Unreadable::Malformed;
    match codec {
        CODEC_NONE => Ok(records.to_vec()),
        CODEC_GZIP => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(records)
                .and_then(|()| enc.finish())
                .map_err(failed)
        }
        CODEC_SNAPPY => deflate_xerial(records),
        CODEC_LZ4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(records).map_err(failed)?;
            enc.finish().map_err(|_| Unreadable::Malformed)
        }
        CODEC_ZSTD => zstd::bulk::compress(records, 3).map_err(failed),
        codec => Err(Unreadable::Codec(codec)),
    }
}

/// Reads `r` to its end, or fails past [`MAX_INFLATED_BYTES`].
fn read_bounded(r: impl Read) -> Result<Vec<u8>, Unreadable> {
    let mut out = Vec::new();
    r.take(MAX_INFLATED_BYTES.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|_| Unreadable::Malformed)?;
    if out.len() as u64 > MAX_INFLATED_BYTES {
        return Err(Unreadable::TooLarge);
    }
    Ok(out)
}

/// One raw block's inflated length, checked against the bound before any
/// allocation.
fn raw_len(block: &[u8]) -> Result<usize, Unreadable> {
    let n = snap::raw::decompress_len(block).map_err(|_| Unreadable::Malformed)?;
    if n as u64 > MAX_INFLATED_BYTES {
        return Err(Unreadable::TooLarge);
    }
    Ok(n)
}

fn inflate_snappy(body: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let mut dec = snap::raw::Decoder::new();
    let Some(mut rest) = body.strip_prefix(&XERIAL_HEADER[..8]) else {
        // No xerial magic: one raw block (librdkafka's framing).
        raw_len(body)?;
        return dec.decompress_vec(body).map_err(|_| Unreadable::Malformed);
    };
    // Version and compatible version (two int32s), then blocks.
    rest = rest.get(8..).ok_or(Unreadable::Malformed)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, after) = rest.split_at_checked(4).ok_or(Unreadable::Malformed)?;
        let len = <[u8; 4]>::try_from(len).map_err(|_| Unreadable::Malformed)?;
        let len = usize::try_from(i32::from_be_bytes(len)).map_err(|_| Unreadable::Malformed)?;
        let (block, after) = after.split_at_checked(len).ok_or(Unreadable::Malformed)?;
        let n = raw_len(block)?;
        let start = out.len();
        let end = start.checked_add(n).ok_or(Unreadable::TooLarge)?;
        if end as u64 > MAX_INFLATED_BYTES {
            return Err(Unreadable::TooLarge);
        }
        out.resize(end, 0);
        let dst = out.get_mut(start..).ok_or(Unreadable::Malformed)?;
        dec.decompress(block, dst)
            .map_err(|_| Unreadable::Malformed)?;
        rest = after;
    }
    Ok(out)
}

fn deflate_xerial(records: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let mut enc = snap::raw::Encoder::new();
    let mut out = XERIAL_HEADER.to_vec();
    for chunk in records.chunks(XERIAL_BLOCK_BYTES) {
        let block = enc.compress_vec(chunk).map_err(|_| Unreadable::Malformed)?;
        let len = i32::try_from(block.len()).map_err(|_| Unreadable::TooLarge)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect()
    }

    #[test]
    fn every_codec_reads_back_what_it_wrote() {
        let records = sample();
        for codec in [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            let packed = deflate(codec, &records).unwrap();
            assert_eq!(inflate(codec, &packed).unwrap(), records, "codec {codec}");
            if codec != CODEC_NONE {
                assert!(
                    packed.len() < records.len() / 2,
                    "codec {codec} did not compress"
                );
            }
        }
    }

    #[test]
    fn snappy_reads_a_raw_block_and_the_xerial_frame() {
        let records = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&records).unwrap();
        assert_eq!(inflate(CODEC_SNAPPY, &raw).unwrap(), records);
        let framed = deflate(CODEC_SNAPPY, &records).unwrap();
        assert_eq!(framed[..16], XERIAL_HEADER);
        assert!(framed.len() > 16 + 4 * (records.len() / XERIAL_BLOCK_BYTES));
    }

    #[test]
    fn a_bomb_stops_at_the_bound_and_garbage_is_malformed() {
        let huge = vec![0u8; (MAX_INFLATED_BYTES + 1) as usize];
        for codec in [CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            let packed = deflate(codec, &huge).unwrap();
            assert_eq!(
                inflate(codec, &packed),
                Err(Unreadable::TooLarge),
                "codec {codec}"
            );
            assert_eq!(
                inflate(codec, b"\x82SNAPPY\0 definitely not compressed"),
                Err(Unreadable::Malformed),
                "codec {codec}"
            );
        }
        assert_eq!(inflate(5, b""), Err(Unreadable::Codec(5)));
    }
}
