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

/// Checks each `to[i].targetRef` against `kinds`, then its `default` with `conf`.
pub(crate) fn check_to<T>(
    to: &Option<Vec<T>>,
    kinds: &[TargetRefKind],
    path: &Path,
    errs: &mut Violations,
    target: impl Fn(&T) -> &TargetRef,
    mut conf: impl FnMut(&T, &Path, &mut Violations),
) {
    for (i, item) in to.iter().flatten().enumerate() {
        let p = path.field("to").index(i);
        validate_target_ref(
            target(item),
            RefRules {
                kinds,
                inbound: false,
            },
            &p.field("targetRef"),
            errs,
        );
        conf(item, &p.field("default"), errs);
    }
}

/// Calls `check` for each rule at `spec.rules[i]`.
pub(crate) fn check_rules<T>(
    rules: &Option<Vec<T>>,
    path: &Path,
    errs: &mut Violations,
    mut check: impl FnMut(&T, &Path, &mut Violations),
) {
    for (i, item) in rules.iter().flatten().enumerate() {
        check(item, &path.field("rules").index(i), errs);
    }
}

pub(crate) fn len<T>(v: &Option<Vec<T>>) -> usize {
    v.as_ref().map_or(0, Vec::len)
}

/// `value` when set must be greater than zero.
pub(crate) fn positive_u32(v: Option<u32>, path: &Path, errs: &mut Violations) {
    if v == Some(0) {
        errs.at(path, "must be greater than 0");
    }
}
