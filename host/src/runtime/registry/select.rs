//! Naming a plugin version the way an operator types it: by semantic version
//! (when exactly one loaded build of the realm type carries it), by its full
//! content hash, or by an unambiguous prefix of that hash.

use std::fmt;

use super::super::{PluginInfo, PluginVersion};

/// Fewest hex characters accepted as a hash prefix: shorter prefixes are too
/// easy to mistype into another version.
pub const MIN_PREFIX: usize = 4;

/// How an operator named a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// The full content hash.
    Hash(PluginVersion),
    /// A semantic version such as `3.0.0` (or `3.1.0-strict`).
    Semver(semver::Version),
    /// The first characters of the content hash (lowercase hex, at least
    /// [`MIN_PREFIX`]).
    Prefix(String),
}

/// A selector that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} names no plugin version: give a semantic version (3.0.0), a 64-character hash or at least {MIN_PREFIX} hex characters of one",
    crate::quote::Quoted(.0)
)]
pub struct InvalidSelector(pub String);

impl VersionSelector {
    /// Parse an operator's input. Dots mean a semantic version; otherwise
    /// hex is a hash (64 characters) or a prefix.
    pub fn parse(input: &str) -> Result<Self, InvalidSelector> {
        let s = input.trim();
        if s.contains('.') {
            let v = s.strip_prefix('v').unwrap_or(s);
            return semver::Version::parse(v)
                .map(Self::Semver)
                .map_err(|_| InvalidSelector(input.to_owned()));
        }
        let lower = s.to_ascii_lowercase();
        if lower.len() < MIN_PREFIX || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidSelector(input.to_owned()));
        }
        match PluginVersion::from_hex(&lower) {
            Some(v) => Ok(Self::Hash(v)),
            None if lower.len() < 64 => Ok(Self::Prefix(lower)),
            None => Err(InvalidSelector(input.to_owned())),
        }
    }

    /// Whether `info` is a version this selector names.
    pub fn matches(&self, info: &PluginInfo) -> bool {
        match self {
            Self::Hash(v) => info.version == *v,
            Self::Semver(v) => semver::Version::parse(&info.semver).is_ok_and(|s| s == *v),
            Self::Prefix(p) => info.version.to_hex().starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hash(v) => f.write_str(&v.to_hex()),
            Self::Semver(v) => write!(f, "{v}"),
            Self::Prefix(p) => write!(f, "{p}…"),
        }
    }
}

impl From<PluginVersion> for VersionSelector {
    fn from(v: PluginVersion) -> Self {
        Self::Hash(v)
    }
}

impl std::str::FromStr for VersionSelector {
    type Err = InvalidSelector;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(semver: &str, byte: u8) -> PluginInfo {
        PluginInfo {
            realm_type: "ledger".into(),
            semver: semver.into(),
            description: String::new(),
            state_version: 1,
            version: PluginVersion([byte; 32]),
            size_bytes: 0,
        }
    }

    #[test]
    fn parses_every_form_and_refuses_the_rest() {
        assert!(matches!(
            VersionSelector::parse("3.0.0"),
            Ok(VersionSelector::Semver(_))
        ));
        assert!(matches!(
            VersionSelector::parse("v3.1.0-strict"),
            Ok(VersionSelector::Semver(_))
        ));
        assert_eq!(
            VersionSelector::parse(&"ab".repeat(32)),
            Ok(VersionSelector::Hash(PluginVersion([0xab; 32])))
        );
        assert_eq!(
            VersionSelector::parse("ABCD"),
            Ok(VersionSelector::Prefix("abcd".into()))
        );
        for bad in ["", "abc", "xyz123", "3.0", "1.2.3.4", &"a".repeat(65)] {
            assert!(VersionSelector::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matches_by_semver_hash_and_prefix() {
        let a = info("3.0.0", 0xab);
        let b = info("3.1.0-strict", 0xcd);
        let s = VersionSelector::parse("3.0.0").unwrap();
        assert!(s.matches(&a) && !s.matches(&b));
        let s = VersionSelector::parse("3.1.0-strict").unwrap();
        assert!(!s.matches(&a) && s.matches(&b));
        let s = VersionSelector::parse("cdcd").unwrap();
        assert!(!s.matches(&a) && s.matches(&b));
        let s = VersionSelector::from(a.version);
        assert!(s.matches(&a) && !s.matches(&b));
    }
}
