//! Crate versions, and the bump each [`Impact`] needs as Cargo reads version requirements.

use std::fmt;

use super::Impact;

/// A `major.minor.patch` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// Parses `1.2.3` (a pre-release or build suffix is ignored).
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.trim().split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let version = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(version)
    }

    /// The smallest version after this one that Cargo treats as allowing `impact`: below 1.0 a
    /// breaking change moves the minor number and anything else the patch number.
    pub fn bumped_for(self, impact: Impact) -> Version {
        match (impact, self.major) {
            (Impact::Breaking, 0) => Version {
                major: 0,
                minor: self.minor + 1,
                patch: 0,
            },
            (Impact::Breaking, major) => Version {
                major: major + 1,
                minor: 0,
                patch: 0,
            },
            (Impact::Additive, 0) | (Impact::Other, _) => Version {
                patch: self.patch + 1,
                ..self
            },
            (Impact::Additive, _) => Version {
                minor: self.minor + 1,
                patch: 0,
                ..self
            },
        }
    }

    /// Whether going from `self` to `to` is a large enough bump for `impact`.
    pub fn allows(self, to: Version, impact: Impact) -> bool {
        to >= self.bumped_for(impact)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_bump_as_cargo_reads_them() {
        let v = |s| {
            Version::parse(s).unwrap_or(Version {
                major: 9,
                minor: 9,
                patch: 9,
            })
        };
        assert_eq!(v("0.1.0").bumped_for(Impact::Breaking), v("0.2.0"));
        assert_eq!(v("0.1.3").bumped_for(Impact::Additive), v("0.1.4"));
        assert_eq!(v("1.4.2").bumped_for(Impact::Breaking), v("2.0.0"));
        assert_eq!(v("1.4.2").bumped_for(Impact::Additive), v("1.5.0"));
        assert!(v("0.1.0").allows(v("0.2.0"), Impact::Breaking));
        assert!(!v("0.1.0").allows(v("0.1.1"), Impact::Breaking));
        assert_eq!(Version::parse("1.2"), None);
    }
}
