//! A minimal DER reader for the one X.509 field failway exports: the leaf
//! certificate's `notAfter`, as unix seconds for the expiry gauge.
//!
//! It walks Certificate -> TBSCertificate -> validity and decodes the two
//! time forms RFC 5280 allows (`YYMMDDHHMMSSZ` UTCTime, `YYYYMMDDHHMMSSZ`
//! GeneralizedTime). It deliberately validates nothing else and is not a
//! general ASN.1 parser: rustls and webpki parse the certificate for real
//! when it is loaded, and anything unexpected here yields `None` (the gauge
//! is then absent), never a panic.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT` (constructed, context-specific 0): the TBSCertificate version.
const CONTEXT_0: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

const SECONDS_PER_DAY: i64 = 86_400;

/// The `notAfter` of a DER-encoded X.509 certificate, in unix seconds.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    // The version is absent from v1 certificates.
    if rest.first() == Some(&CONTEXT_0) {
        rest = read_tlv(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature_algorithm, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (_, _not_before, rest) = read_tlv(validity)?;
    let (tag, not_after, _) = read_tlv(rest)?;
    parse_time(tag, not_after)
}

/// One element: its tag, its contents and what follows it.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // High tag numbers never occur on the path walked here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // 0x80 is BER's indefinite length (not DER); more than 4 length
        // bytes would describe a certificate over 4 GiB.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = read_tlv(input)?;
    (found == tag).then_some((contents, rest))
}

/// Decodes a UTCTime or GeneralizedTime in the forms RFC 5280 mandates
/// (UTC, `Z`, seconds present, no fraction).
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            // RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, below is 20YY.
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    // `rest` is MMDDHHMMSSZ.
    if rest[10] != b'Z' {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second)
}

fn digits(s: &[u8]) -> Option<i64> {
    s.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`: years counted from March, so the leap day is last).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Option<i64> {
        parse_time(UTC_TIME, s.as_bytes())
    }

    fn generalized(s: &str) -> Option<i64> {
        parse_time(GENERALIZED_TIME, s.as_bytes())
    }

    /// DER encoding of one element, with a long-form length when needed.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = contents.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len <= 0xff {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(contents);
        out
    }

    fn cert(version: bool, issuer_len: usize, not_after: Vec<u8>) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(CONTEXT_0, &tlv(INTEGER, &[2])));
        }
        tbs.extend(tlv(INTEGER, &[0x01, 0x02, 0x03]));
        tbs.extend(tlv(SEQUENCE, &tlv(0x06, &[0x2a, 0x86, 0x48])));
        tbs.extend(tlv(SEQUENCE, &vec![0x55; issuer_len]));
        let mut validity = tlv(UTC_TIME, b"200101000000Z");
        validity.extend(not_after);
        tbs.extend(tlv(SEQUENCE, &validity));
        tbs.extend(tlv(SEQUENCE, &[])); // subject: not read
        let mut body = tlv(SEQUENCE, &tbs);
        body.extend(tlv(SEQUENCE, &[])); // signatureAlgorithm
        body.extend(tlv(0x03, &[0x00])); // signature
        tlv(SEQUENCE, &body)
    }

    #[test]
    fn utc_time_at_the_epoch_and_around_the_century_pivot() {
        assert_eq!(utc("700101000000Z"), Some(0));
        assert_eq!(utc("491231235959Z"), Some(2_524_607_999)); // 2049-12-31T23:59:59Z
        assert_eq!(utc("500101000000Z"), Some(-631_152_000)); // 1950-01-01
        assert_eq!(utc("240229120000Z"), Some(1_709_208_000)); // leap day 2024
    }

    #[test]
    fn generalized_time_from_2050_on() {
        assert_eq!(generalized("20500101000000Z"), Some(2_524_608_000));
        assert_eq!(generalized("99991231235959Z"), Some(253_402_300_799));
        assert_eq!(generalized("20000229000000Z"), Some(951_782_400)); // 400-year leap
    }

    #[test]
    fn rejects_forms_rfc_5280_forbids_and_impossible_dates() {
        for bad in [
            "20240101000000.5Z", // fraction
            "20240101000000+0100",
            "202401010000Z", // no seconds
            "2024010100000Z",
            "20230229000000Z", // not a leap year
            "19000229000000Z", // century, not a leap year
            "20241301000000Z",
            "20240100000000Z",
            "20240431000000Z",
            "20240101240000Z",
            "20240101006000Z",
            "20240101000060Z",
            "2024-1-1000000Z",
            "20240101000000z",
        ] {
            assert_eq!(generalized(bad), None, "{bad}");
        }
        assert_eq!(
            utc("20500101000000Z"),
            None,
            "GeneralizedTime text as UTCTime"
        );
        assert_eq!(
            generalized("500101000000Z"),
            None,
            "UTCTime text as GeneralizedTime"
        );
        assert_eq!(parse_time(0x13, b"700101000000Z"), None, "PrintableString");
    }

    #[test]
    fn walks_v3_and_v1_certificates_and_long_lengths() {
        let after = tlv(GENERALIZED_TIME, b"20500101000000Z");
        assert_eq!(
            not_after(&cert(true, 10, after.clone())),
            Some(2_524_608_000)
        );
        assert_eq!(
            not_after(&cert(false, 10, after.clone())),
            Some(2_524_608_000)
        );
        // Issuers past 127 and 255 bytes take one- and two-byte long lengths.
        assert_eq!(
            not_after(&cert(true, 200, after.clone())),
            Some(2_524_608_000)
        );
        assert_eq!(not_after(&cert(true, 300, after)), Some(2_524_608_000));
        let utc_after = tlv(UTC_TIME, b"300615083000Z");
        assert_eq!(not_after(&cert(true, 10, utc_after)), Some(1_907_742_600));
    }

    #[test]
    fn malformed_input_yields_none() {
        let good = cert(true, 10, tlv(GENERALIZED_TIME, b"20500101000000Z"));
        for cut in 0..good.len() {
            assert_eq!(not_after(&good[..cut]), None, "truncated at {cut}");
        }
        assert_eq!(not_after(&[]), None);
        assert_eq!(
            not_after(&[0x30, 0x80, 0x00, 0x00]),
            None,
            "indefinite length"
        );
        assert_eq!(
            not_after(&[0x30, 0x85, 1, 0, 0, 0, 0]),
            None,
            "5 length bytes"
        );
        assert_eq!(not_after(&[0x1f, 0x01, 0x00]), None, "high tag number");
        let mut wrong = good.clone();
        wrong[0] = 0x31; // SET instead of SEQUENCE
        assert_eq!(not_after(&wrong), None);
        // notAfter is not a time.
        let bad_time = cert(true, 10, tlv(0x0c, b"20500101000000Z"));
        assert_eq!(not_after(&bad_time), None);
    }
}
