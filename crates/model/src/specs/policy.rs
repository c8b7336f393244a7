//! Section rules every targetRef policy shares.

use super::common::{RefRules, TargetRef, TargetRefKind, validate_target_ref};
use crate::validate::{Path, Violations};

/// Checks the optional top-level targetRef against the kinds the policy supports.
pub(crate) fn top_level(
    r: &Option<TargetRef>,
    kinds: &[TargetRefKind],
    inbound: bool,
    path: &Path,
    errs: &mut Violations,
) {
    if let Some(r) = r {
        validate_target_ref(
            r,
            RefRules { kinds, inbound },
            &path.field("targetRef"),
            errs,
        );
    }
}

/// `to` and `rules` are mutually exclusive, and one of them is required.
pub(crate) fn sections_exclusive(to: usize, rules: usize, path: &Path, errs: &mut Violations) {
    if to > 0 && rules > 0 {
        errs.at(path, "fields 'to' must be empty when 'rules' is defined");
    }
    if to == 0 && rules == 0 {
        errs.at(path, "at least one of 'to' or 'rules' has to be defined");
    }
}
