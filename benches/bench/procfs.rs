//! What the kernel says about a process: resident memory, CPU time and
//! thread count from `/proc/<pid>/{status,stat,smaps_rollup}`, and where
//! its resident text lies (`maps`, `pagemap`). Read-only
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

/// Resident text of `binary` in process `pid`, split at the hot-text
/// layout (build.rs): (kB inside `.text.hot`, kB in the rest of the
/// executable mapping). The second part grows when the code that runs is
/// no longer what `scripts/hot-text` profiled: the sign to regenerate it.
/// Reads the binary's section headers (the `object` crate) for
/// `.text.hot`, the process's `/proc/<pid>/maps` for where its executable
/// segment lies, and `/proc/<pid>/pagemap` for which of those pages are
/// present (the present bit is readable without privileges). None without
/// `.text.hot`.
pub fn hot_text_kb(pid: i32, binary: &std::path::Path) -> Result<Option<(u64, u64)>> {
    let Some((hot_off, hot_len)) = elf_section(binary, ".text.hot")? else {
        return Ok(None);
    };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    let exe = std::fs::canonicalize(binary).context("resolving the binary's path")?;
    let (start, end, offset) = maps
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[1] != "r-xp" || std::path::Path::new(f[5]) != exe {
                return None;
            }
            let (a, b) = f[0].split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                u64::from_str_radix(f[2], 16).ok()?,
            ))
        })
        .context("no executable mapping of the binary")?;
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .with_context(|| format!("opening /proc/{pid}/pagemap"))?;
    use std::io::{Read, Seek, SeekFrom};
    let pages = ((end - start) / 4096) as usize;
    let mut raw = vec![0u8; pages * 8];
    pagemap.seek(SeekFrom::Start(start / 4096 * 8))?;
    pagemap.read_exact(&mut raw).context("reading pagemap")?;
    let (mut hot, mut rest) = (0, 0);
    for (i, entry) in raw.chunks_exact(8).enumerate() {
        let present = u64::from_le_bytes(entry.try_into().unwrap_or([0; 8])) >> 63 == 1;
        if !present {
            continue;
        }
        let file_off = offset + i as u64 * 4096;
        if file_off + 4096 > hot_off && file_off < hot_off + hot_len {
            hot += 4;
        } else {
            rest += 4;
        }
    }
    Ok(Some((hot, rest)))
}

/// (file offset, size) of the section `name` of `binary`, or None.
fn elf_section(binary: &std::path::Path, name: &str) -> Result<Option<(u64, u64)>> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("parsing {} as an object file", binary.display()))?;
    Ok(file.section_by_name(name).and_then(|s| s.file_range()))
}
