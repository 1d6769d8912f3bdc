//! The two regions failway fronts: the one type every layer names (config,
//! upstreams, health, failover, routing, metrics), so it lives below all of
//! them.

/// One of the two regions failway fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    Primary,
    Replica,
}

impl Region {
    pub const ALL: [Region; 2] = [Region::Primary, Region::Replica];

    /// The label value used in headers, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Primary => "primary",
            Region::Replica => "replica",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Region::Primary => 0,
            Region::Replica => 1,
        }
    }

    pub fn other(self) -> Region {
        match self {
            Region::Primary => Region::Replica,
            Region::Replica => Region::Primary,
        }
    }
}
