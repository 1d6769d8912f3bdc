//! Value types of the config file that need their own syntax: byte sizes
//! (`"64KiB"`), HTTP status ranges (`"200-499"`) and CIDR blocks
//! (`"10.0.0.0/8"`). Each parses from the string form, prints back in a form
//! that parses to the same value, and fails with a message saying what would be
//! valid. They know nothing of key paths; `validate` adds those.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A number of bytes. Parses `"512B"`, `"16KiB"`, `"1MiB"`, `"1GiB"`, `"1TiB"`
/// (binary), `"1KB"`, `"1MB"`, `"1GB"`, `"1TB"` (decimal) and a bare integer
/// (bytes); units are case-insensitive. Prints in the largest binary unit that
/// divides it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;
    pub const TIB: u64 = 1024 * 1024 * 1024 * 1024;

    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The size as `usize`, saturating on targets where it does not fit.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a size (e.g. \"64KiB\", \"1MiB\", \"512B\"){detail}")]
pub struct ParseByteSizeError {
    input: String,
    detail: &'static str,
}

impl FromStr for ByteSize {
    type Err = ParseByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |detail| ParseByteSizeError {
            input: s.to_owned(),
            detail,
        };
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(digits_end);
        if number.is_empty() {
            return Err(err(""));
        }
        let number: u64 = number.parse().map_err(|_| err(": too large"))?;
        let multiplier = match unit.trim_start().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => Self::KIB,
            "mib" => Self::MIB,
            "gib" => Self::GIB,
            "tib" => Self::TIB,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(err("; units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB")),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| err(": too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [
            ("TiB", Self::TIB),
            ("GiB", Self::GIB),
            ("MiB", Self::MIB),
            ("KiB", Self::KIB),
        ] {
            if n != 0 && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

/// A set of HTTP status codes such as `"200-499"` or `"200,204,300-399"`;
/// every code is in 100..=599.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusRanges {
    /// Inclusive ranges in the order written, each with `lo <= hi`.
    ranges: Vec<(u16, u16)>,
}

impl StatusRanges {
    /// One inclusive range; the caller guarantees `100 <= lo <= hi <= 599`.
    pub(super) fn single_range(lo: u16, hi: u16) -> Self {
        StatusRanges {
            ranges: vec![(lo, hi)],
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    /// The inclusive ranges, in the order written.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a list of status codes or ranges (e.g. \"200-499\", \"200,204,300-399\"; each code in 100..=599): {detail}"
)]
pub struct ParseStatusRangesError {
    input: String,
    detail: String,
}

impl FromStr for StatusRanges {
    type Err = ParseStatusRangesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |detail: String| ParseStatusRangesError {
            input: s.to_owned(),
            detail,
        };
        let code = |part: &str| -> Result<u16, ParseStatusRangesError> {
            let part = part.trim();
            match part.parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                Ok(_) => Err(err(format!("{part} is outside 100..=599"))),
                Err(_) => Err(err(format!("{part:?} is not a status code"))),
            }
        };
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(err("empty entry".to_owned()));
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (code(lo)?, code(hi)?),
                None => {
                    let c = code(item)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(err(format!("range {lo}-{hi} is reversed")));
            }
            ranges.push((lo, hi));
        }
        Ok(StatusRanges { ranges })
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// An IP network such as `"10.0.0.0/8"` or `"fd00::/8"`; a bare address is a
/// /32 (IPv4) or /128 (IPv6). The address has no bits set past the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a CIDR (e.g. \"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\"): {detail}")]
pub struct ParseCidrError {
    input: String,
    detail: String,
}

impl Cidr {
    /// A network from its address and prefix length; fails when the prefix is
    /// too long for the address family or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, ParseCidrError> {
        let input = format!("{addr}/{prefix}");
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(ParseCidrError {
                input,
                detail: format!("the prefix length must be at most {max}"),
            });
        }
        let network = mask(addr, prefix);
        if network != addr {
            return Err(ParseCidrError {
                input,
                detail: format!("host bits are set; the network is {network}/{prefix}"),
            });
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`, as a dual-stack socket reports IPv4 peers) matches
    /// IPv4 networks, and an IPv4 address matches IPv6 networks holding its
    /// mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => ip,
        };
        mask(ip, self.prefix) == self.addr
    }
}

/// `addr` with every bit past `prefix` cleared; `prefix` is at most the
/// family's width (callers check).
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |detail: String| ParseCidrError {
            input: s.to_owned(),
            detail,
        };
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| err(format!("{addr:?} is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(err(format!("the prefix length must be 0..={max}"))),
            },
        };
        Cidr::new(addr, prefix).map_err(|e| ParseCidrError {
            input: s.to_owned(),
            detail: e.detail,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
