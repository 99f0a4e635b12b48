//! `--cpus LIST`: pins the harness to a set of cores with
//! sched_setaffinity, so a run on a small machine can keep the broker and
//! the load generator apart and show what the harness itself costs.
//!
//! The mask is set on the calling thread before any other thread starts;
//! Linux gives every new thread its creator's mask, so producers, ack
//! readers and consumers all inherit it.

use std::fmt;

/// The highest CPU number a list may name (glibc's CPU_SETSIZE is 1024).
const MAX_CPU: usize = 1023;

/// Why a CPU list does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuListError {
    #[error("empty CPU list")]
    Empty,
    #[error("`{0}` is not a CPU number or a range A-B")]
    NotANumber(String),
    #[error("range `{0}` goes backwards")]
    Backwards(String),
    #[error("CPU {0} is above {MAX_CPU}")]
    TooHigh(usize),
}

/// A set of CPUs, sorted and without duplicates, as `taskset -c` takes
/// them: `1`, `0-1`, `0,2-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl CpuList {
    pub fn parse(s: &str) -> Result<CpuList, CpuListError> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let number = |t: &str| {
                t.trim()
                    .parse::<usize>()
                    .map_err(|_| CpuListError::NotANumber(part.to_string()))
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(part)?, number(part)?),
            };
            if lo > hi {
                return Err(CpuListError::Backwards(part.to_string()));
            }
            if hi > MAX_CPU {
                return Err(CpuListError::TooHigh(hi));
            }
            cpus.extend(lo..=hi);
        }
        if cpus.is_empty() {
            return Err(CpuListError::Empty);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    /// The compact form: runs of consecutive CPUs as ranges (`0-2,5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// For clap's `value_parser`.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    CpuList::parse(s).map_err(|e| format!("`{s}`: {e}"))
}

/// Restricts the calling thread (and every thread it starts afterwards) to
/// `cpus`. Fails when the kernel refuses the mask, e.g. when none of the
/// CPUs exists or is allowed to this process.
pub fn pin_current_thread(cpus: &CpuList) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array for which all zeroes is the
    // empty set (what CPU_ZERO writes).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in &cpus.0 {
        // CpuList::parse keeps every CPU at or below MAX_CPU, inside the
        // set's CPU_SETSIZE bits, which CPU_SET needs.
        debug_assert!(cpu <= MAX_CPU);
        // SAFETY: `cpu` < CPU_SETSIZE (above), `set` is a valid cpu_set_t.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the size is the size of `set`,
    // which lives for the duration of the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            let allowed = current_cpus().map_or_else(|_| "?".into(), |c| c.to_string());
            return Err(std::io::Error::new(
                e.kind(),
                format!("{e}: none of CPUs {cpus} exists or is allowed (allowed: {allowed})"),
            ));
        }
        return Err(e);
    }
    Ok(())
}

/// CPU seconds (user + system) this process has used so far, all threads.
pub fn process_cpu_s() -> std::io::Result<f64> {
    // SAFETY: all zeroes is a valid rusage (integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a pointer to a rusage that outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(s(usage.ru_utime) + s(usage.ru_stime))
}

/// The CPUs the calling thread may run on.
pub fn current_cpus() -> std::io::Result<CpuList> {
    // SAFETY: as in pin_current_thread, all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the kernel writes at most
    // `size_of::<cpu_set_t>()` bytes into `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: every index is below CPU_SETSIZE, `set` was filled above.
    let cpus = (0..=MAX_CPU)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    Ok(CpuList(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_taskset_style_lists() {
        assert_eq!(CpuList::parse("1").unwrap().0, [1]);
        assert_eq!(CpuList::parse("0-1").unwrap().0, [0, 1]);
        assert_eq!(CpuList::parse("0,2-4, 7").unwrap().0, [0, 2, 3, 4, 7]);
        assert_eq!(CpuList::parse("3,1-2,2").unwrap().0, [1, 2, 3]);
        assert_eq!(CpuList::parse("5-5").unwrap().0, [5]);
        assert_eq!(CpuList::parse("1023").unwrap().0, [1023]);
    }

    #[test]
    fn refuses_bad_lists() {
        assert_eq!(CpuList::parse(""), Err(CpuListError::Empty));
        assert_eq!(CpuList::parse(" , "), Err(CpuListError::Empty));
        assert_eq!(
            CpuList::parse("2-1"),
            Err(CpuListError::Backwards("2-1".into()))
        );
        assert_eq!(CpuList::parse("1024"), Err(CpuListError::TooHigh(1024)));
        assert_eq!(CpuList::parse("0-5000"), Err(CpuListError::TooHigh(5000)));
        for bad in ["a", "-1", "1-", "1-2-3", "0x1", "1.5"] {
            assert!(
                matches!(CpuList::parse(bad), Err(CpuListError::NotANumber(_))),
                "{bad}"
            );
        }
        assert!(parse_cpu_list("x").unwrap_err().contains("`x`"));
    }

    #[test]
    fn prints_the_compact_form() {
        for (input, shown) in [
            ("1", "1"),
            ("0-1", "0-1"),
            ("0,1,2,5", "0-2,5"),
            ("7,3,4", "3-4,7"),
        ] {
            assert_eq!(CpuList::parse(input).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn counts_cpu_time_spent() {
        let before = process_cpu_s().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_cpu_s().unwrap() > before);
    }

    #[test]
    fn pins_a_thread_to_one_of_its_cpus() {
        // In a thread of its own, so the test harness keeps its mask.
        std::thread::spawn(|| {
            let allowed = current_cpus().unwrap();
            let one = CpuList(vec![*allowed.0.last().unwrap()]);
            pin_current_thread(&one).unwrap();
            assert_eq!(current_cpus().unwrap(), one);
            // A thread started now inherits the mask.
            let child = std::thread::spawn(|| current_cpus().unwrap());
            assert_eq!(child.join().unwrap(), one);
            // A CPU that does not exist is refused.
            assert!(pin_current_thread(&CpuList(vec![MAX_CPU])).is_err());
        })
        .join()
        .unwrap();
    }
}
