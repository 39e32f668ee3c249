//! A simulated SSH fleet for the benchmark (issue 7, part 2).
//!
//! One tokio runtime serves thousands of addresses with [russh]: every host accepts the test
//! key (or a password), runs nothing, and answers the agent's `exec "/bin/sh -s"` with the output
//! of one real run of the collection script on this machine, framed with the marker the
//! client's script declares. That makes a host cost the simulator a key exchange and a memcpy,
//! so thousands of concurrent hosts measure the collector, not the hosts.
//!
//! - [`canned`]: the template run and the marker substitution;
//! - [`server`]: the russh handler and the accept loops.
//!
//! The binaries: `luumen-simfleet` (the server) and `simfleet-bench` (the benchmark driver:
//! network namespace, netem delay, agent runs, table). See `bench/README.md`.
//!
//! ```
//! use luumen_simfleet::canned::{script_marker, Canned, TEMPLATE_MARKER};
//! let m = TEMPLATE_MARKER;
//! let canned = Canned::from_capture(m, format!("{m} BEGIN a\n\n{m} END a 000\n").as_bytes(), b"");
//! let script = b"M='@@LUUMEN-0123456789abcdef0123456789abcdef@@'\nLUUMEN_SUDO=1\n";
//! let (stdout, _) = canned.answer(script_marker(script).unwrap());
//! assert!(stdout.starts_with(b"@@LUUMEN-0123456789abcdef0123456789abcdef@@ BEGIN a\n"));
//! ```

pub mod canned;
pub mod server;
