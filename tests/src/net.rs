//! Loopback addresses and ports for tests.
//!
//! All of `127.0.0.0/8` is routed to the loopback interface on Linux, so every
//! test can get its own addresses and does not collide with other tests of the
//! same process (atomic counter) or of parallel test processes, as under
//! cargo-nextest (the second octet is derived from the process id).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Addresses handed out so far by this process.
static NEXT_ADDRESS: AtomicU32 = AtomicU32::new(0);

/// Usable values for the third and fourth octet (1..=254).
const OCTET_SPAN: u32 = 254;

/// Returns `n` distinct loopback addresses `127.P.Q.R`, never handed out
/// before by this process.
///
/// `P` (1..=254) is derived from the process id, `Q` and `R` (1..=254) from a
/// process-wide counter, so `127.0.0.1` is never returned. A process can hand
/// out 64,516 addresses in total; beyond that this panics.
pub fn free_loopback_addresses(n: usize) -> Vec<Ipv4Addr> {
    let n32 = u32::try_from(n).expect("free_loopback_addresses: n too large");
    let first = NEXT_ADDRESS.fetch_add(n32, Ordering::SeqCst);
    let second_octet = pid_octet(std::process::id());
    (first..first + n32)
        .map(|index| {
            assert!(
                index < OCTET_SPAN * OCTET_SPAN,
                "free_loopback_addresses: this process ran out of loopback addresses"
            );
            let third = 1 + index / OCTET_SPAN;
            let fourth = 1 + index % OCTET_SPAN;
            Ipv4Addr::new(127, second_octet, octet(third), octet(fourth))
        })
        .collect()
}

/// Maps a process id to an octet in 1..=254.
fn pid_octet(pid: u32) -> u8 {
    octet(1 + pid % OCTET_SPAN)
}

fn octet(value: u32) -> u8 {
    u8::try_from(value).expect("octet value out of range")
}

/// Returns a TCP port on `addr` with nothing listening on it.
///
/// The port is obtained by binding port 0 and dropping the listener, so
/// connecting to it is refused (until something else happens to bind it,
/// which is very unlikely on a per-test loopback address).
pub fn closed_port(addr: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind(SocketAddrV4::new(addr, 0))
        .unwrap_or_else(|e| panic!("closed_port: cannot bind {addr}:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("closed_port: local_addr of {addr}: {e}"))
        .port()
}

/// Finds a port that is currently free on every address in `addrs`.
///
/// Binds port 0 on the first address, then checks that the same port can be
/// bound on all the others; retries with a new port otherwise. The listeners
/// are dropped before returning, so a race with another process is possible:
/// callers must be prepared to retry.
pub fn free_port_on_all(addrs: &[Ipv4Addr]) -> std::io::Result<u16> {
    let Some(first) = addrs.first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "free_port_on_all: no addresses given",
        ));
    };
    let mut last_error = None;
    for _ in 0..100 {
        let probe = TcpListener::bind(SocketAddrV4::new(*first, 0))?;
        let port = probe.local_addr()?.port();
        let mut held = vec![probe];
        let mut ok = true;
        for addr in &addrs[1..] {
            match TcpListener::bind(SocketAddrV4::new(*addr, port)) {
                Ok(listener) => held.push(listener),
                Err(e) => {
                    last_error = Some(e);
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return Ok(port);
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "free_port_on_all: no common free port found",
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn addresses_are_distinct_and_not_localhost() {
        let a = free_loopback_addresses(300);
        let b = free_loopback_addresses(3);
        let all: HashSet<_> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(all.len(), 303);
        for addr in &all {
            assert!(addr.is_loopback());
            assert_ne!(*addr, Ipv4Addr::LOCALHOST);
            let o = addr.octets();
            assert!((1..=254).contains(&o[1]) && (1..=254).contains(&o[3]));
        }
    }

    #[test]
    fn closed_port_refuses_connections() {
        let addr = free_loopback_addresses(1)[0];
        let port = closed_port(addr);
        assert!(std::net::TcpStream::connect((addr, port)).is_err());
    }

    #[test]
    fn common_port_is_bindable_everywhere() {
        let addrs = free_loopback_addresses(5);
        let port = free_port_on_all(&addrs).expect("free port");
        for a in addrs {
            TcpListener::bind((a, port)).expect("bind common port");
        }
    }
}
