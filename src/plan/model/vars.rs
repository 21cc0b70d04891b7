//! `vars:`, `fragments:` and `include:`: values and step lists shared inside a plan and across
//! plan files.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Step;
use crate::protocol::OneOrMany;

/// Named values used in any plan string as `{{ vars.NAME }}` (values may use `{{ env.NAME }}`).
pub type Vars = BTreeMap<String, String>;

/// Named step lists, used in a scenario (or another fragment) with `- use: NAME`.
pub type Fragments = BTreeMap<String, Vec<Step>>;

/// `include: common/fragments.yaml` (or a list): files whose `vars:` and `fragments:` this
/// plan uses, relative to the plan's folder. The plan's own definitions win over included ones.
pub type Includes = Option<OneOrMany<String>>;

/// What an included file may hold: `vars:`, `fragments:` and its own `include:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Library {
    /// Files this one includes in turn.
    #[serde(default)]
    pub include: Includes,
    /// Values shared as `{{ vars.NAME }}`.
    #[serde(default)]
    pub vars: Vars,
    /// Step lists shared as `- use: NAME`.
    #[serde(default)]
    pub fragments: Fragments,
}
