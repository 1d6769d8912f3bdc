//! Where a request goes: the two regions and, as the failover engine grows,
//! the pure decision (request class, failover snapshot) -> target region or
//! refusal. No I/O here.

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
