//! The names that pick a model version: version names (`v1`, `v2`, ...) and the
//! aliases (`champion`, `previous`). A name comes from outside (the command line, the
//! alias file, the journal, a card, a bucket listing) and becomes part of a path or an
//! object key, so it is checked where it enters: only [`VersionName`] builds a
//! version's key, and it holds a number, so `../x` or `v1/../../x` cannot reach one.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The longest name quoted back in an error; a longer one is cut (it is input).
const QUOTED_CHARS: usize = 64;

/// A version name: `v` and a number from 1 up, in ASCII digits with no leading zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionName(u64);

/// An alias: the closed set of names that point at a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    Champion,
    Previous,
}

/// A name that is neither a version name nor an alias.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "model version {quoted} is not a version name: versions are v1, v2, ... and the aliases champion and previous (see `triage models list`)"
)]
pub struct BadName {
    quoted: String,
}

impl BadName {
    fn new(name: &str) -> Self {
        let mut shown: String = name.chars().take(QUOTED_CHARS).collect();
        if name.chars().count() > QUOTED_CHARS {
            shown.push_str("...");
        }
        // Debug quoting escapes control characters: the name may be hostile.
        Self {
            quoted: format!("{shown:?}").replace('"', "'"),
        }
    }
}

impl VersionName {
    /// `v<n>` exactly, as stored in the alias file, the journal, a card and a key.
    pub fn parse(name: &str) -> Result<Self, BadName> {
        name.strip_prefix('v')
            .and_then(number)
            .map(Self)
            .ok_or_else(|| BadName::new(name))
    }

    /// What a person may type on the command line: `v3`, or `3` for short.
    pub fn parse_typed(name: &str) -> Result<Self, BadName> {
        Self::parse(name).or_else(|e| number(name).map(Self).ok_or(e))
    }

    pub fn number(self) -> u64 {
        self.0
    }

    /// The version after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    pub fn first() -> Self {
        Self(1)
    }

    /// The key of one of this version's files (`versions/v3/model.json`).
    pub fn key(self, file: &str) -> String {
        format!("versions/{self}/{file}")
    }
}

/// A version number in canonical digits: 1 up, no sign, no leading zero.
fn number(digits: &str) -> Option<u64> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten()
}

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl From<VersionName> for String {
    fn from(v: VersionName) -> Self {
        v.to_string()
    }
}

impl Alias {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "champion" => Some(Self::Champion),
            "previous" => Some(Self::Previous),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Champion => "champion",
            Self::Previous => "previous",
        }
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// serde `deserialize_with` for an optional version name (`"v3"` or null): a file
/// that names anything else is not read.
pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name: Option<String> = Option::deserialize(d)?;
    if let Some(name) = &name {
        VersionName::parse(name).map_err(serde::de::Error::custom)?;
    }
    Ok(name)
}

/// serde `deserialize_with` for a version name.
pub(super) fn one<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    VersionName::parse(&name).map_err(serde::de::Error::custom)?;
    Ok(name)
}

/// serde `deserialize_with` for a list of version names.
pub(super) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names: Vec<String> = Vec::deserialize(d)?;
    for name in &names {
        VersionName::parse(name).map_err(serde::de::Error::custom)?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_are_v_and_a_canonical_number() {
        assert_eq!(VersionName::parse("v1").unwrap().number(), 1);
        assert_eq!(VersionName::parse("v120").unwrap().to_string(), "v120");
        for bad in [
            "",
            "v",
            "v0",
            "v01",
            "v+1",
            "v-1",
            "v1 ",
            " v1",
            "V1",
            "1",
            "v1/..",
            "../v1",
            "../../etc",
            "v1\0",
            "v١",
            "v99999999999999999999999",
        ] {
            assert!(VersionName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_typed_name_may_leave_out_the_v() {
        assert_eq!(VersionName::parse_typed("3").unwrap().to_string(), "v3");
        assert_eq!(VersionName::parse_typed("v3").unwrap().to_string(), "v3");
        assert!(VersionName::parse_typed("03").is_err());
        assert!(VersionName::parse_typed("+3").is_err());
        assert!(VersionName::parse_typed("champion").is_err());
    }

    #[test]
    fn the_error_quotes_the_name_escaped_and_cut_and_says_what_names_are() {
        let err = VersionName::parse("../../etc").unwrap_err().to_string();
        assert_eq!(
            err,
            "model version '../../etc' is not a version name: versions are v1, v2, ... and the aliases champion and previous (see `triage models list`)"
        );
        let err = VersionName::parse("v1\u{1b}[2J").unwrap_err().to_string();
        assert!(err.contains(r"'v1\u{1b}[2J'"), "{err}");
        let err = VersionName::parse(&"x".repeat(1000))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 250, "{err}");
    }

    #[test]
    fn aliases_are_a_closed_set() {
        assert_eq!(Alias::parse("champion"), Some(Alias::Champion));
        assert_eq!(Alias::parse("previous"), Some(Alias::Previous));
        assert_eq!(Alias::parse("latest"), None);
        assert_eq!(Alias::parse("Champion"), None);
    }

    #[test]
    fn keys_are_built_from_the_number_only() {
        let v = VersionName::parse("v7").unwrap();
        assert_eq!(v.key("card.json"), "versions/v7/card.json");
        assert_eq!(v.next().to_string(), "v8");
    }
}
