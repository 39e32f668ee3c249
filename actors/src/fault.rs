//! Fault injection for the agent's own tests: `LUUMEN_FAULT_PANIC_HOSTS=id1,id2` makes the host
//! actors of those hosts panic at the start of every collection, so that tests can check with the
//! real binary that one broken host actor is restarted alone and never stops the others. Unset
//! (always, in production) it costs one lookup of a cached empty list.

use std::sync::OnceLock;

/// The environment variable naming the hosts whose actors panic.
pub const PANIC_HOSTS_VAR: &str = "LUUMEN_FAULT_PANIC_HOSTS";

fn panic_hosts() -> &'static [String] {
    static HOSTS: OnceLock<Vec<String>> = OnceLock::new();
    HOSTS.get_or_init(|| {
        std::env::var(PANIC_HOSTS_VAR)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Panics when `host_id` is listed in [`PANIC_HOSTS_VAR`].
pub(crate) fn maybe_panic(host_id: &str) {
    if panic_hosts().iter().any(|h| h == host_id) {
        panic!("fault injection ({PANIC_HOSTS_VAR}): host actor of {host_id} panics");
    }
}
