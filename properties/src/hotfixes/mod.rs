//! `hotfixes`: Windows updates installed through Component Based Servicing
//! (`Win32_QuickFixEngineering`). Parsed by [`crate::windows`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hotfix {
    /// `HotFixID`, e.g. `"KB5034439"`.
    pub id: String,
    /// `Description`: `"Update"`, `"Security Update"`, `"Hotfix"`, …
    pub description: Option<String>,
    /// `InstalledOn` as `YYYY-MM-DD` (`None` when Windows does not record it).
    pub installed_on: Option<String>,
}
