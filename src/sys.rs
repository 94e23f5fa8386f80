//! The system calls minibot makes without a safe wrapper in std, each
//! behind a safe function or type: this is the only module with `unsafe`
//! code (`lib.rs` denies it everywhere else).
//!
//! Owns: [`MappedBlocks`] (with the `master` feature, which brings argon2),
//! the Argon2 working memory mapped straight from
//! the kernel (so a password check never leaves ~19 MiB in malloc's
//! arenas: issue 14 item 6), and [`connect_from`], a TCP connection from a
//! chosen local address (std cannot bind before connecting; the hostile
//! tests use it to arrive from 127.0.0.N the way a neighbour would),
//! [`widen_backlog`] for the HTTP listener, and the libc calls of the
//! daemons: signals, detaching, umask, malloc tuning, waitid, localtime;
//! and [`start_group_guard`], the process that kills a build step's whole
//! process group when the worker dies (issue 16 point 4).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
#[cfg(feature = "master")]
use std::ops::{Deref, DerefMut};
use std::os::fd::FromRawFd;
#[cfg(feature = "master")]
use std::ptr::NonNull;

/// Argon2 memory blocks in an anonymous private mapping of their own,
/// unmapped when dropped: the pages go back to the kernel at once, and
/// none of them ever belonged to malloc (a `Vec` of 19 MiB is served by
/// mmap too, but glibc raises its mmap threshold after freeing one, so the
/// next one lands in an arena and stays resident).
#[cfg(feature = "master")]
pub(crate) struct MappedBlocks {
    ptr: NonNull<argon2::Block>,
    count: usize,
}

#[cfg(feature = "master")]
impl MappedBlocks {
    /// Maps `count` zeroed blocks (1 KiB each).
    pub(crate) fn new(count: usize) -> io::Result<MappedBlocks> {
        let len = count
            .checked_mul(argon2::Block::SIZE)
            .filter(|&n| n > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad block count"))?;
        // SAFETY: a fresh anonymous private mapping: no address hint, no file
        // descriptor; the kernel picks the place and we check for failure.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<argon2::Block>())
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        Ok(MappedBlocks { ptr, count })
    }
}

#[cfg(feature = "master")]
impl Deref for MappedBlocks {
    type Target = [argon2::Block];
    fn deref(&self) -> &[argon2::Block] {
        // SAFETY: the mapping is `count` blocks long, page aligned (more than
        // Block's 64-byte alignment), readable and writable, and lives until
        // drop. Anonymous mappings start zeroed, and a Block is a plain
        // `[u64; 128]`, for which all-zero bytes are a valid value. `&self`
        // keeps out any `&mut` to the same memory.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.count) }
    }
}

#[cfg(feature = "master")]
impl DerefMut for MappedBlocks {
    fn deref_mut(&mut self) -> &mut [argon2::Block] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.count) }
    }
}

#[cfg(feature = "master")]
impl AsMut<[argon2::Block]> for MappedBlocks {
    fn as_mut(&mut self) -> &mut [argon2::Block] {
        self
    }
}

#[cfg(feature = "master")]
impl Drop for MappedBlocks {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new` (same address and
        // length); no reference into it outlives `self`.
        let rc =
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.count * argon2::Block::SIZE) };
        if rc != 0 {
            log::error!(
                "munmap of Argon2 memory failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// A TCP connection to `remote` (IPv4) from the local address `local`
/// (port chosen by the kernel), e.g. from 127.0.0.5 to 127.0.0.1.
pub fn connect_from(local: IpAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let (IpAddr::V4(l), SocketAddr::V4(r)) = (local, remote) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "connect_from: IPv4 addresses only",
        ));
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let (la, ra) = (sin(l, 0), sin(*r.ip(), r.port()));
    let alen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket() takes no pointers; a negative result is an error.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just opened and own alone; the stream
    // takes it over and closes it on every path from here.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // SAFETY: both pointers are to live `sockaddr_in` values of `alen` bytes.
    let rc = unsafe { libc::bind(fd, (&raw const la).cast(), alen) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as for bind.
    let rc = unsafe { libc::connect(fd, (&raw const ra).cast(), alen) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

#[cfg(feature = "master")]
/// Raises a listening socket's accept backlog to `n` (the kernel caps it
/// at `net.core.somaxconn`, 4096 on current Linux). std listens with 128:
/// a neighbour connecting in a tight loop fills that between two rounds of
/// the HTTP reception thread, and a real client's SYN is then dropped and
/// retried only after a second.
pub(crate) fn widen_backlog(listener: &impl std::os::fd::AsRawFd, n: i32) -> io::Result<()> {
    // SAFETY: listen(2) on a socket we own; called again on a listening
    // socket it only changes the backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), n) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether process `pid` exists (a zombie counts) and may be signalled by
/// us or is someone else's (EPERM).
pub(crate) fn pid_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks whether the
    // pid exists and whether we may signal it.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// kill(2). Refuses pids 0 and -1 (our own process group, everyone).
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    if pid == 0 || pid == -1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: plain kill(2) with a checked pid.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd`'s child a daemon's: a new session (no controlling
/// terminal, so no SIGHUP/SIGINT from it), and every fd above 2 it
/// inherits marked close-on-exec, so whatever the caller leaked to us (a
/// shell's or CI runner's pipes) does not stay open for the daemon's whole
/// life and keep that caller waiting.
pub(crate) fn detach_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // Computed here: pre_exec may only make async-signal-safe calls.
    // Capped: the loop is one syscall per fd.
    // SAFETY: sysconf only reads a system limit.
    let max_fd = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(256, 65536) as libc::c_int;
    // SAFETY: setsid and fcntl are async-signal-safe and touch no memory of
    // ours; std's own exec-error pipe is close-on-exec already.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            for fd in 3..max_fd {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
}

/// Points fds 1 and 2 (stdout, stderr) at `file`.
pub(crate) fn stdout_stderr_to(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto fds 1 and 2 replaces them atomically; `file` stays
    // open until after the calls and the target fds are never left closed.
    unsafe {
        libc::dup2(file.as_raw_fd(), 1);
        libc::dup2(file.as_raw_fd(), 2);
    }
}

/// glibc's M_ARENA_MAX (no-op elsewhere); call before starting threads.
pub(crate) fn malloc_arena_max(n: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

#[cfg(feature = "master")]
/// glibc's malloc_trim(0) (no-op elsewhere): free pages of every arena go
/// back to the kernel.
pub(crate) fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) has no preconditions; it only gives free pages
    // of the arenas back (madvise), locking each arena as malloc does.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// geteuid(2): the user this process acts as (whom secret files must
/// belong to, `config::secret_dir`).
#[cfg(feature = "master")]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// umask(2): this process's (and its children's) file-creation mask.
pub(crate) fn set_umask(mask: u32) {
    // SAFETY: umask(2) only sets this process's file-creation mask.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// Starts the guard of one build step (issue 16 point 4): a process that
/// leads a new process group, in which the step's command is then started
/// (`Command::process_group(guard_pid)`), and that kills that whole group,
/// itself included, as soon as `alive` reaches end of file.
///
/// `alive` is the read end of a pipe whose write end only the worker holds
/// (close-on-exec, so no step inherits it). The worker never writes to it:
/// end of file means the write end was closed, by the worker on purpose or
/// by the kernel because the worker died, by whatever signal (SIGKILL, the
/// OOM killer). A `PR_SET_PDEATHSIG` would fire when the forking *thread*
/// ends and kill only the process that set it, not the grandchildren; the
/// pipe has neither limit. A guard started after the worker already died
/// reads end of file at once (no race between start and setup).
///
/// `keep` (the build directory's lock) stays open in the guard, so the lock
/// is held until the guard dies with the group: a worker started after a
/// `kill -9` cannot take the directory while the old step still runs.
///
/// The guard is the worker's child, not the command's: it never shows up
/// in the command's `wait()`, and the worker reaps it ([`reap`]). It runs
/// no code of ours but system calls (the parent is multi-threaded), with
/// every signal blocked, so the worker's SIGTERM to the group (a timeout, a
/// stop) leaves it waiting and only SIGKILL ends it early.
///
/// Where the kernel has `close_range` (5.9 and later) the guard shares the
/// worker's memory (`clone` with `CLONE_VM`, as `posix_spawn` starts a
/// child) on a stack of its own ([`GuardStack`]): a `fork` copied the
/// worker's page tables and made every page the worker then wrote fault
/// for a private copy, which cost each step ~0.4 ms of worker CPU and a
/// quarter of the builds a second a worker runs (docs/performance.md).
/// Sharing memory, the guard must write none of it: it makes raw system
/// calls only, none of which can fail in a way that sets `errno` (the
/// forking thread's, shared): signals are blocked, so `read` is never
/// interrupted, and `close_range` leaves nothing to close one by one.
/// Without `close_range` the guard is forked as before. Returns the guard's
/// pid, which is the group id, and its stack, to be dropped only once the
/// guard is reaped.
pub(crate) fn start_group_guard(
    alive: std::os::fd::BorrowedFd<'_>,
    keep: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<(i32, Option<GuardStack>)> {
    start_guard(alive, keep, has_close_range())
}

/// [`start_group_guard`], sharing the worker's memory or forked as told
/// (the tests run both ways whatever the kernel).
fn start_guard(
    alive: std::os::fd::BorrowedFd<'_>,
    keep: Option<std::os::fd::BorrowedFd<'_>>,
    share_memory: bool,
) -> io::Result<(i32, Option<GuardStack>)> {
    use std::os::fd::AsRawFd;
    // Computed before the start: the child may only make system calls.
    // SAFETY: sysconf only reads a system limit.
    let max_fd = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(256, 1 << 20) as libc::c_int;
    let args = GuardArgs {
        alive: alive.as_raw_fd(),
        keep: keep.map_or(-1, |k| k.as_raw_fd()),
        max_fd,
    };
    let stack = if share_memory {
        Some(GuardStack::new(args)?)
    } else {
        None
    };
    // SAFETY: sigset_t is plain old data; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals. Every signal is blocked
    // around the start so that the child never runs the worker's handlers
    // (signal-hook's would tell the worker it got a SIGTERM meant for the
    // step); the parent's mask is restored right after.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    let pid = match &stack {
        // SAFETY: the child runs `guard_entry` on the mapping's own stack
        // (16-byte aligned top, 64 KiB, far more than the few frames it
        // needs), reading the arguments written at the mapping's bottom;
        // the mapping outlives the child (`GuardStack` is dropped after the
        // reap). Without CLONE_FILES it gets its own copy of the fd table,
        // without CLONE_THREAD it is a process of its own (its _exit ends
        // only itself); it makes only raw system calls that cannot fail
        // (see above), so it writes no memory of the worker's but its stack.
        Some(st) => unsafe {
            libc::clone(
                guard_entry,
                st.top(),
                libc::CLONE_VM | libc::SIGCHLD,
                st.args(),
            )
        },
        // SAFETY: fork in a multi-threaded process: the child runs only
        // `guard_main`, which makes system calls and never returns (it
        // ends in _exit), so it touches no lock or allocator state that
        // another thread may have held at the fork.
        None => unsafe {
            let pid = libc::fork();
            if pid == 0 {
                guard_main(args);
            }
            pid
        },
    };
    let err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above (a live local).
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(err);
    }
    // Also from the parent, as shells do: the step is started in this
    // group next, and the child may not have run its own setpgid yet.
    // SAFETY: setpgid on our own child, which never execs; EACCES/ESRCH
    // cannot happen before we reap it.
    unsafe {
        libc::setpgid(pid, pid);
    }
    Ok((pid, stack))
}

/// What the guard needs, as plain integers (it may not allocate).
#[derive(Clone, Copy)]
#[repr(C)]
struct GuardArgs {
    alive: libc::c_int,
    keep: libc::c_int,
    max_fd: libc::c_int,
}

/// The stack of a guard that shares the worker's memory: an anonymous
/// mapping of its own, with the guard's [`GuardArgs`] at its bottom (the
/// stack grows down from the top, far from them). Unmapped when dropped,
/// which its owner does only once the guard has been reaped.
pub(crate) struct GuardStack {
    ptr: *mut libc::c_void,
}

const GUARD_STACK: usize = 64 * 1024;

impl GuardStack {
    fn new(args: GuardArgs) -> io::Result<GuardStack> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched. Checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                GUARD_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is GUARD_STACK bytes, page-aligned, far more
        // than a GuardArgs, and ours alone until the guard starts.
        unsafe { ptr.cast::<GuardArgs>().write(args) };
        Ok(GuardStack { ptr })
    }

    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is where a stack
        // that grows down starts; page-aligned, so 16-byte aligned.
        unsafe { self.ptr.cast::<u8>().add(GUARD_STACK).cast() }
    }

    fn args(&self) -> *mut libc::c_void {
        self.ptr
    }
}

impl Drop for GuardStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; its guard is reaped.
        unsafe {
            libc::munmap(self.ptr, GUARD_STACK);
        }
    }
}

/// Whether this kernel has `close_range` (Linux 5.9): asked once, by
/// closing an fd that cannot be open.
fn has_close_range() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: close_range of the single fd u32::MAX, which no process
        // has open: it closes nothing and takes no pointers.
        unsafe { libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, 0u32) == 0 }
    })
}

/// The entry point of a guard started by `clone`.
extern "C" fn guard_entry(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `args` is the GuardArgs written at the bottom of this
    // guard's stack mapping, which lives until the guard is reaped.
    let args = unsafe { args.cast::<GuardArgs>().read() };
    guard_main(args)
}

/// The guard's whole life, in the child: only raw system calls (no libc
/// wrapper state, which a guard sharing the worker's memory would share).
fn guard_main(a: GuardArgs) -> ! {
    // SAFETY: system calls on plain integers and on static or stack
    // buffers; nothing allocates, locks or unwinds, and the function ends
    // in _exit.
    unsafe {
        libc::syscall(libc::SYS_setpgid, 0, 0);
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_NAME,
            c"minibot-guard".as_ptr(),
        );
        // Keep only `alive` and `keep`: an inherited copy of another
        // step's pipe, the master's socket or the step's output pipes would
        // hold them open.
        let (alive, keep) = (a.alive, a.keep);
        let (lo, hi) = if keep >= 0 {
            (alive.min(keep), alive.max(keep))
        } else {
            (alive, alive)
        };
        close_fds(0, lo - 1, a.max_fd);
        close_fds(lo + 1, hi - 1, a.max_fd);
        close_fds(hi + 1, libc::c_int::MAX, a.max_fd);
        let mut buf = [0u8; 16];
        // Until end of file. Every signal is blocked, so a read is never
        // interrupted; any other error (there is none for a pipe we hold)
        // ends the wait too, and the group with it.
        while libc::syscall(libc::SYS_read, alive, buf.as_mut_ptr(), buf.len()) > 0 {}
        // Our own group: the step and everything it started, and us.
        libc::syscall(libc::SYS_kill, 0, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Closes fds `first..=last` (close_range, or one by one up to `max_fd`
/// on kernels before 5.9). Async-signal-safe.
///
/// # Safety
/// Only for the guard child, which owns every fd it closes.
unsafe fn close_fds(first: libc::c_int, last: libc::c_int, max_fd: libc::c_int) {
    if first > last || first < 0 {
        return;
    }
    // SAFETY: the caller owns these fds; close_range takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    if r == 0 {
        return;
    }
    for fd in first..=last.min(max_fd) {
        // SAFETY: as above.
        unsafe {
            libc::close(fd);
        }
    }
}

/// Waits for child `pid` to exit and reaps it (for a guard, which std's
/// `Child` does not know).
pub(crate) fn reap(pid: i32) -> io::Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one child of ours; `status` is a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Blocks until child `pid` has exited, without reaping it (WNOWAIT: it
/// stays waitable, so `Child::wait` reaps it afterwards).
pub(crate) fn wait_exited_no_reap(pid: i32) -> io::Result<()> {
    // SAFETY: siginfo_t is plain old data, so all-zero is a valid value;
    // waitid only writes into it.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(feature = "master")]
/// Unix time `t` in the local time zone (TZ, /etc/localtime); None if the
/// C library cannot convert it.
pub(crate) fn localtime(t: i64) -> Option<libc::tm> {
    let tt = t as libc::time_t;
    // SAFETY: tm is plain old data, so all-zero is valid; localtime_r (the
    // thread-safe variant) writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are to live locals.
    let ok = unsafe { !libc::localtime_r(&tt, &mut tm).is_null() };
    ok.then_some(tm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "master")]
    fn blocks_are_zeroed_writable_and_unmapped() {
        let mut b = MappedBlocks::new(19 * 1024).unwrap();
        assert_eq!(b.len(), 19 * 1024);
        // Zeroed at both ends, and the last block is writable.
        let z = format!("{:?}", argon2::Block::new());
        assert_eq!(format!("{:?}", b[0]), z);
        assert_eq!(format!("{:?}", b[19 * 1024 - 1]), z);
        b[19 * 1024 - 1] = argon2::Block::default();
        drop(b);
        assert!(MappedBlocks::new(0).is_err());
        assert!(MappedBlocks::new(usize::MAX).is_err());
    }

    #[test]
    fn connects_from_another_loopback_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = connect_from("127.0.0.7".parse().unwrap(), l.local_addr().unwrap()).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.7");
        assert_eq!(s.local_addr().unwrap().ip(), peer.ip());
    }

    /// Both ways of starting a guard: it leads its own group, a command
    /// started in that group runs, the guard keeps it alive while the pipe
    /// is open, and end of file kills the command and the guard, which is
    /// then reaped; a shared-memory guard's stack is unmapped after.
    #[test]
    fn a_guard_kills_its_group_at_end_of_file_shared_or_forked() {
        use std::os::fd::AsFd;
        use std::os::unix::process::CommandExt;
        for share in [true, false] {
            let (rd, wr) = std::io::pipe().unwrap();
            let (pgid, stack) = start_guard(rd.as_fd(), None, share).unwrap();
            drop(rd);
            assert_eq!(stack.is_some(), share);
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .process_group(pgid)
                .spawn()
                .unwrap();
            // Still running while the worker's end is open.
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(child.try_wait().unwrap().is_none(), "share={share}");
            drop(wr);
            let t = std::time::Instant::now();
            let status = child.wait().unwrap();
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGKILL), "share={share}");
            reap(pgid).unwrap();
            drop(stack);
        }
    }
}
