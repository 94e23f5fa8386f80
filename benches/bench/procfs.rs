//! What the kernel says about a process: resident memory, CPU time and
//! thread count from `/proc/<pid>/{status,stat,smaps_rollup}`. Read-only
//! file parsing; no threads, no channels.

use anyhow::{Context, Result};

/// A `Key:   value kB` field of `/proc/<pid>/status` (VmRSS, VmHWM, Threads).
pub fn status_field(pid: i32, key: &str) -> Result<u64> {
    minibot::daemon::proc_status_field(&pid.to_string(), key)
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

pub fn rss_kb(pid: i32) -> Result<u64> {
    status_field(pid, "VmRSS")
}

/// Resident anonymous memory (heap, stacks): what the process itself
/// allocated, as opposed to file-backed text the kernel maps in.
pub fn anon_kb(pid: i32) -> Result<u64> {
    status_field(pid, "RssAnon")
}

/// A process's memory as the kernel counts it, in kB.
pub struct Mem {
    /// VmRSS: every resident page mapped, shared ones (the binary's text,
    /// libc) counted whole.
    pub rss: f64,
    /// RssAnon: resident anonymous pages (heap, stacks), the process's own.
    pub anon: f64,
    /// Pss (`smaps_rollup`): each resident page divided by the number of
    /// processes mapping it, what this process adds to the machine's use.
    pub pss: f64,
}

pub fn mem(pid: i32) -> Result<Mem> {
    let pss = smaps_rollup(pid)
        .into_iter()
        .find_map(|(k, v)| (k == "Pss").then_some(v))
        .with_context(|| format!("no Pss in /proc/{pid}/smaps_rollup"))?;
    Ok(Mem {
        rss: rss_kb(pid)? as f64,
        anon: anon_kb(pid)? as f64,
        pss: pss as f64,
    })
}

pub fn threads(pid: i32) -> Result<u64> {
    status_field(pid, "Threads")
}

/// utime + stime of a process, in milliseconds.
pub fn cpu_ms(pid: i32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; count from after its ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let ticks: u64 = f
        .get(11)
        .zip(f.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .context("no utime/stime in /proc stat")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 * 1000.0 / hz)
}

/// This process's own CPU time (all threads), in milliseconds.
pub fn self_cpu_ms() -> f64 {
    cpu_ms(std::process::id() as i32).unwrap_or(0.0)
}

/// `/proc/<pid>/smaps_rollup` as (field, kB) pairs: where the RSS is.
pub fn smaps_rollup(pid: i32) -> Vec<(String, u64)> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_string(), kb))
        })
        .collect()
}
