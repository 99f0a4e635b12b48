//! `strom-bench send-zc`: whether io_uring's zero-copy send (SEND_ZC) pays
//! for large messages, such as a fetch response, on this machine's network
//! path. Issue 18 asks for SEND_ZC "where it pays"; this measures it before
//! the broker takes it on.
//!
//! One TCP connection, over loopback by default: a sender thread submits
//! `--message-bytes`
//! messages through an io_uring ring (the `io-uring` crate), either as plain
//! SEND or as SEND_ZC, until `--total-bytes` are sent; a receiver thread
//! reads and counts them. The modes alternate, round by round. Each run
//! reports its throughput and the CPU spent per GiB: the process's (user +
//! system, both threads), and the machine's from `/proc/stat` (busy time of
//! every core, softirq and ksoftirqd included, where a loopback receive may
//! run outside the process; run it on an otherwise idle machine). For SEND_ZC
//! it also counts the notifications whose usage report says the kernel
//! copied the data after all (`IORING_NOTIF_USAGE_ZC_COPIED`).
//!
//! With `--listen` on a veth address and `--sender-netns`, the sender
//! thread joins another network namespace first, so the bytes cross a veth
//! pair instead of loopback (`results/send-zc/run.sh` sets one up).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use io_uring::{cqueue, opcode, types, IoUring};
use serde::Serialize;

/// `IORING_SEND_ZC_REPORT_USAGE` (linux/io_uring.h): the notification
/// reports whether the data was copied after all.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's result when the
/// kernel copied the data.
const NOTIF_USAGE_ZC_COPIED: i32 = i32::MIN;
/// Buffers the sender rotates through: a SEND_ZC buffer stays the kernel's
/// until its notification, after its send completes.
const BUFFERS: usize = 8;

#[derive(clap::Args)]
pub struct SendZcArgs {
    /// Bytes each run sends (suffixes K, M, G, KiB, MiB, GiB)
    #[arg(long, default_value = "4GiB", value_parser = crate::engine_bench::parse_bytes)]
    pub total_bytes: u64,
    /// Bytes of each send
    #[arg(long, default_value = "1MiB", value_parser = crate::engine_bench::parse_bytes)]
    pub message_bytes: u64,
    /// Sends in flight at once
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    /// Rounds; each runs SEND and SEND_ZC, the order alternating
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Also write the runs as JSON here
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Address the receiver listens on (port 0: any)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Network namespace (a name under /var/run/netns) the sender joins
    /// before it connects
    #[arg(long)]
    pub sender_netns: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Send,
    SendZc,
}

#[derive(Debug, Serialize)]
struct Run {
    round: u32,
    mode: Mode,
    bytes: u64,
    seconds: f64,
    gib_per_s: f64,
    /// User + system CPU of the process per GiB sent.
    cpu_s_per_gib: f64,
    /// Busy CPU of the whole machine (`/proc/stat`, all but idle, iowait
    /// and steal) per GiB sent.
    machine_cpu_s_per_gib: f64,
    sends: u64,
    /// SEND_ZC notifications, and how many reported a copy.
    notifications: u64,
    copied: u64,
}

pub fn run(args: SendZcArgs) -> anyhow::Result<()> {
    if args.message_bytes == 0 || args.message_bytes > u64::from(u32::MAX) {
        bail!("--message-bytes must be between 1 and 4 GiB");
    }
    if args.depth == 0 || args.depth > BUFFERS {
        bail!("--depth must be between 1 and {BUFFERS}");
    }
    println!(
        "# send-zc: {} MiB per run in {} KiB sends, {} in flight, TCP to {}{}",
        args.total_bytes >> 20,
        args.message_bytes >> 10,
        args.depth,
        args.listen,
        args.sender_netns
            .as_deref()
            .map(|n| format!(" from network namespace {n}"))
            .unwrap_or_default()
    );
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        let mut modes = [Mode::Send, Mode::SendZc];
        if round % 2 == 0 {
            modes.reverse();
        }
        for mode in modes {
            let r = one_run(&args, round, mode)?;
            println!(
                "round {} {:>8}: {:.2} GiB/s, CPU s per GiB {:.3} (process) {:.3} (machine), {} sends, {} of {} notifications copied",
                r.round,
                match r.mode {
                    Mode::Send => "send",
                    Mode::SendZc => "send-zc",
                },
                r.gib_per_s,
                r.cpu_s_per_gib,
                r.machine_cpu_s_per_gib,
                r.sends,
                r.copied,
                r.notifications
            );
            runs.push(r);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&runs)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn process_cpu_s() -> f64 {
    // SAFETY: `rusage` is plain integers, for which zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Busy seconds of all cores so far: `/proc/stat`'s first line, all but
/// idle, iowait and steal (and guest time, already counted in user).
fn machine_busy_s() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(busy as f64 / hz)
}

fn one_run(args: &SendZcArgs, round: u32, mode: Mode) -> anyhow::Result<Run> {
    let listener = TcpListener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let netns = args.sender_netns.clone();
    let cpu0 = process_cpu_s();
    let busy0 = machine_busy_s()?;
    let started = Instant::now();
    let sent = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<(u64, u64, u64)> {
            if let Some(name) = &netns {
                join_netns(name)?;
            }
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            send_all(&stream, args, mode)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
    });
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_s() - cpu0;
    let busy = machine_busy_s()? - busy0;
    let (sends, notifications, copied) = sent?;
    if received != args.total_bytes {
        bail!("received {received} bytes of {}", args.total_bytes);
    }
    let gib = args.total_bytes as f64 / (1u64 << 30) as f64;
    Ok(Run {
        round,
        mode,
        bytes: args.total_bytes,
        seconds,
        gib_per_s: gib / seconds,
        cpu_s_per_gib: cpu / gib,
        machine_cpu_s_per_gib: busy / gib,
        sends,
        notifications,
        copied,
    })
}

/// Moves the calling thread into the network namespace `name`.
fn join_netns(name: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{name}");
    let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid namespace file descriptor; only this thread moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// A buffer's state in the sender's rotation. It is free once it is
/// `Idle` and every SEND_ZC notification it is owed has come.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Idle,
    /// A send of `[off, len)` of it is in flight.
    Sending {
        off: usize,
        len: usize,
    },
}

/// Sends `args.total_bytes`; returns (sends, notifications, copied).
fn send_all(stream: &TcpStream, args: &SendZcArgs, mode: Mode) -> anyhow::Result<(u64, u64, u64)> {
    let fd = types::Fd(stream.as_raw_fd());
    let msg = args.message_bytes as usize;
    let bufs: Vec<Vec<u8>> = (0..BUFFERS)
        .map(|b| (0..msg).map(|i| (i as u8) ^ (b as u8)).collect())
        .collect();
    let mut slots = [Slot::Idle; BUFFERS];
    let mut owed = [0u32; BUFFERS]; // notifications not come yet
    let mut ring = IoUring::new(64)?;
    let mut left = args.total_bytes; // not yet handed to a send
    let mut unsent = args.total_bytes; // not yet reported sent
    let (mut sends, mut notifications, mut copied) = (0u64, 0u64, 0u64);
    let submit = |ring: &mut IoUring, b: usize, off: usize, len: usize| -> anyhow::Result<()> {
        let ptr = bufs[b][off..].as_ptr();
        let n = (len - off) as u32;
        let entry = match mode {
            Mode::Send => opcode::Send::new(fd, ptr, n)
                .flags(libc::MSG_WAITALL)
                .build(),
            Mode::SendZc => opcode::SendZc::new(fd, ptr, n)
                .flags(libc::MSG_WAITALL)
                .zc_flags(SEND_ZC_REPORT_USAGE)
                .build(),
        }
        .user_data(b as u64);
        // SAFETY: the buffer outlives the ring's use of it: `bufs` lives
        // until this function returns, which waits for every completion
        // and notification.
        unsafe { ring.submission().push(&entry) }.context("submission queue full")?;
        Ok(())
    };
    loop {
        let in_flight = slots
            .iter()
            .filter(|s| matches!(s, Slot::Sending { .. }))
            .count();
        if left > 0 && in_flight < args.depth {
            let free = (0..BUFFERS).find(|&b| slots[b] == Slot::Idle && owed[b] == 0);
            if let Some(b) = free {
                let len = msg.min(left as usize);
                left -= len as u64;
                slots[b] = Slot::Sending { off: 0, len };
                submit(&mut ring, b, 0, len)?;
                sends += 1;
                continue;
            }
        }
        if unsent == 0 && owed.iter().all(|&n| n == 0) {
            return Ok((sends, notifications, copied));
        }
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32, u32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (b, res, flags) in done {
            let b = b as usize;
            if cqueue::notif(flags) {
                notifications += 1;
                if res & NOTIF_USAGE_ZC_COPIED != 0 {
                    copied += 1;
                }
                owed[b] = owed[b].saturating_sub(1);
                continue;
            }
            let Slot::Sending { off, len } = slots[b] else {
                bail!("a completion for buffer {b}, which has no send in flight");
            };
            if res < 0 {
                bail!("send failed: {}", std::io::Error::from_raw_os_error(-res));
            }
            let off = off + res as usize;
            unsent -= res as u64;
            if cqueue::more(flags) {
                owed[b] += 1;
            }
            if off < len {
                // A short send: the rest of the message goes next.
                slots[b] = Slot::Sending { off, len };
                submit(&mut ring, b, off, len)?;
                sends += 1;
            } else {
                slots[b] = Slot::Idle;
            }
        }
    }
}
