//! Drives the real `strom` binary with kcat (Debian 12: kcat 1.7.1, librdkafka 2.0.2).

mod common;

use common::{consume, kcat, produce, Broker};

#[test]
fn metadata_lists_broker_and_auto_created_topic() {
    let b = Broker::start(&[]);
    let out = kcat(&["-b", &b.addr(), "-L"], b"");
    assert!(out.status.success(), "{}", out.stderr);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("broker 0 at 127.0.0.1:{}", b.port)),
        "{text}"
    );

    produce(&b.addr(), "listed", &["x".to_string()], "none", &[]);
    let out = kcat(&["-b", &b.addr(), "-L", "-t", "listed"], b"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("topic \"listed\" with 1 partitions"),
        "{text}"
    );
    assert!(
        text.contains("partition 0, leader 0, replicas: 0, isrs: 0"),
        "{text}"
    );
}

#[test]
fn round_trip_every_codec_with_keys_and_headers() {
    let b = Broker::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        // Values with repetition compress; a few large ones cross batch sizes.
        let lines: Vec<String> = (0..200)
            .map(|i| format!("key-{i}:value-{codec}-{i}-{}", "x".repeat(i * 13 % 700)))
            .collect();
        produce(
            &b.addr(),
            &topic,
            &lines,
            codec,
            &["-K:", "-H", "h1=v1", "-H", "h2=v2"],
        );
        let got = consume(&b.addr(), &topic, "beginning", "%k:%s|%h\n");
        let want: Vec<String> = lines.iter().map(|l| format!("{l}|h1=v1,h2=v2")).collect();
        assert_eq!(got, want, "codec {codec}");
    }
}

#[test]
fn consume_from_offsets() {
    let b = Broker::start(&[]);
    let lines: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    // Two produce calls make two batches at least.
    produce(&b.addr(), "offsets", &lines[..5], "none", &[]);
    produce(&b.addr(), "offsets", &lines[5..], "lz4", &[]);
    assert_eq!(
        consume(&b.addr(), "offsets", "beginning", "%o %s\n").len(),
        10
    );
    let from7 = consume(&b.addr(), "offsets", "7", "%o %s\n");
    assert_eq!(from7, vec!["7 v7", "8 v8", "9 v9"]);
    let last2 = consume(&b.addr(), "offsets", "-2", "%o %s\n");
    assert_eq!(last2, vec!["8 v8", "9 v9"]);
    let end = consume(&b.addr(), "offsets", "end", "%o %s\n");
    assert!(end.is_empty(), "{end:?}");
}

#[test]
fn multi_partition_topic_over_several_shards() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("strom.toml");
    std::fs::write(
        &conf,
        format!("{}num.partitions = 6\n", common::TEST_CONFIG),
    )
    .expect("write config");
    let b = Broker::start(&[
        "--shards",
        "2",
        "--config",
        conf.to_str().expect("utf8 path"),
    ]);
    let lines: Vec<String> = (0..300).map(|i| format!("k{i}:v{i}")).collect();
    // Keyed records spread over all 6 partitions, owned by both shards.
    produce(&b.addr(), "spread", &lines, "snappy", &["-K:"]);
    let mut got = consume(&b.addr(), "spread", "beginning", "%k:%s\n");
    got.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(got, want);
    let partitions = consume(&b.addr(), "spread", "beginning", "%p\n");
    let mut seen: Vec<String> = partitions;
    seen.sort();
    seen.dedup();
    assert!(
        seen.len() > 1,
        "records landed on one partition only: {seen:?}"
    );
}

#[test]
fn long_poll_consumer_sees_later_records() {
    let b = Broker::start(&[]);
    produce(&b.addr(), "poll", &["first".to_string()], "none", &[]);
    let addr = b.addr();
    // A consumer that exits after 3 messages; the last two are produced
    // while it long-polls.
    let consumer = std::thread::spawn(move || {
        kcat(
            &[
                "-b",
                &addr,
                "-C",
                "-t",
                "poll",
                "-o",
                "beginning",
                "-c",
                "3",
                "-q",
                "-f",
                "%s\n",
            ],
            b"",
        )
    });
    // Give the consumer time to reach the end, so the next records arrive
    // during a long poll. The assertion holds either way; the pause only
    // makes the long-poll path the likely one.
    std::thread::sleep(std::time::Duration::from_millis(500));
    produce(
        &b.addr(),
        "poll",
        &["second".to_string(), "third".to_string()],
        "gzip",
        &[],
    );
    let out = consumer.join().expect("consumer thread");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first\nsecond\nthird\n"
    );
}

#[test]
fn large_volume_round_trip() {
    // ~40 MB through one consumer: fetch responses larger than the socket
    // buffer exercise the partial-write path of the vectored writer.
    let b = Broker::start(&[]);
    let lines: Vec<String> = (0..40_000)
        .map(|i| format!("{i:08}-{}", "z".repeat(1000)))
        .collect();
    produce(
        &b.addr(),
        "volume",
        &lines,
        "none",
        &["-X", "batch.num.messages=2000"],
    );
    let got = consume(&b.addr(), "volume", "beginning", "%s\n");
    assert_eq!(got.len(), lines.len());
    assert!(got == lines, "records differ");
}

#[test]
fn one_shard_and_more_shards_than_cores() {
    for shards in ["1", "3"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let conf = tmp.path().join("strom.toml");
        std::fs::write(
            &conf,
            format!("{}num.partitions = 5\n", common::TEST_CONFIG),
        )
        .expect("write config");
        let b = Broker::start(&[
            "--shards",
            shards,
            "--config",
            conf.to_str().expect("utf8 path"),
        ]);
        let lines: Vec<String> = (0..100).map(|i| format!("k{i}:v{i}")).collect();
        produce(&b.addr(), "shards", &lines, "gzip", &["-K:"]);
        let mut got = consume(&b.addr(), "shards", "beginning", "%k:%s\n");
        got.sort();
        let mut want = lines.clone();
        want.sort();
        assert_eq!(got, want, "{shards} shards");
    }
}
