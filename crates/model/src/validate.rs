//! Collecting every violation at once, each with its field path.
//!
//! Paths follow Kuma's format: `spec.to[0].default.http.requestTimeout`,
//! map keys as `spec.tags["kuma.io/service"]`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing wrong with an input, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub field: String,
    pub reason: String,
}

/// Every violation found in one input. Empty means valid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Violations(Vec<Violation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut v = Self::new();
        v.add(field, reason);
        v
    }

    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Records a violation at `path`.
    pub fn at(&mut self, path: &Path, reason: impl Into<String>) {
        self.add(path.as_str(), reason);
    }

    pub fn extend(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }

    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }

    /// `Ok(())` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// A field path under construction. Cheap to clone; each step returns a new path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn root(name: &str) -> Path {
        Path(name.to_string())
    }

    pub fn field(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key:?}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns a serde error from typed deserialization into one violation whose
/// field is the path serde was at, rooted at `root` (`spec`, or empty for
/// inline kinds).
pub fn from_serde_error(
    root: &Path,
    err: serde_path_to_error::Error<serde_json::Error>,
) -> Violations {
    let mut path = root.clone();
    for seg in err.path().iter() {
        path = match seg {
            serde_path_to_error::Segment::Seq { index } => path.index(*index),
            serde_path_to_error::Segment::Map { key } => path.field(key),
            serde_path_to_error::Segment::Enum { variant } => path.field(variant),
            serde_path_to_error::Segment::Unknown => path,
        };
    }
    let inner = err.into_inner();
    let mut reason = inner.to_string();
    // serde_json appends " at line 1 column 42" which means nothing for a value
    // we re-parse; the path already says where.
    if let Some(i) = reason.find(" at line ") {
        reason.truncate(i);
    }
    let field = if path.as_str().is_empty() {
        root.as_str().to_string()
    } else {
        path.0
    };
    Violations::single(field, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = Path::root("spec").field("to").index(0).field("default");
        assert_eq!(p.as_str(), "spec.to[0].default");
        assert_eq!(
            Path::root("spec")
                .field("tags")
                .key("kuma.io/service")
                .as_str(),
            "spec.tags[\"kuma.io/service\"]"
        );
        assert_eq!(Path::root("").field("networking").as_str(), "networking");
    }

    #[test]
    fn collects_all() {
        let mut v = Violations::new();
        v.add("a", "bad");
        v.add("b", "worse");
        assert_eq!(v.len(), 2);
        assert_eq!(v.to_string(), "a: bad; b: worse");
        assert!(v.into_result().is_err());
    }
}
