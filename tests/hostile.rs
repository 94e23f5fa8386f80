//! Issue 14, "the front door": each attack a hostile neighbour on the host,
//! or a cross-site page through the operator's tunnel, would try, run with
//! real sockets against the real master and worker binaries. Each test
//! asserts the outcome and prints the figure it measured.

mod files;
mod hooks;
mod http;
mod logins;
