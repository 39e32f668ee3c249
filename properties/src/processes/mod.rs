//! `processes`: the processes running at collection time. Parsed by
//! [`crate::windows`] from `Get-Process`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Image name without extension (`Get-Process` `Name`, e.g. `"svchost"`).
    pub name: String,
    pub pid: u32,
    /// Full path of the executable; `None` where it is not readable (other
    /// users' and protected processes without elevation).
    pub path: Option<String>,
}
