//! Unit tests of `values`.

use super::*;

fn utc(text: &str) -> Option<i64> {
    parse_timestamp(text).and_then(|t| t.utc_micros(None))
}

#[test]
fn timestamps_with_offsets_and_fractions() {
    let t = parse_timestamp("2024-02-29T23:59:59.123456+05:30").unwrap();
    assert_eq!(t.offset_seconds, Some(19_800));
    assert_eq!(
        t.utc_micros(None),
        Some(1_709_251_199_123_456 - 19_800 * MICROS)
    );
    assert_eq!(utc("1970-01-01 00:00:00Z"), Some(0));
    assert_eq!(utc("1970-01-01 00:00:00 UTC"), Some(0));
    assert_eq!(utc("1969-12-31T23:59:59-0100"), Some(3_599 * MICROS));
    assert_eq!(utc("1970-01-01T01:00:00 +01"), Some(0));
    assert_eq!(parse_timestamp("2024-01-01").unwrap().offset_seconds, None);
    // PostgreSQL rounds through a double, half to even.
    assert_eq!(utc("1970-01-01T00:00:00.0000005Z"), Some(0));
    assert_eq!(utc("1970-01-01T00:00:00.0000015Z"), Some(2));
    assert_eq!(utc("1970-01-01T00:00:59.9999995Z"), Some(60 * MICROS));
    // Leap seconds and 24:00 carry over.
    assert_eq!(utc("1970-01-01T23:59:60Z"), Some(86_400 * MICROS));
    assert_eq!(utc("1970-01-01T24:00:00Z"), Some(86_400 * MICROS));
    assert_eq!(utc("epoch"), Some(0));
    assert_eq!(utc("19700101T0100+01"), Some(0));
    assert_eq!(utc("-Infinity"), Some(i64::MIN));
    for bad in [
        "2023-02-29T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2024-01-01T25:00:00Z",
        "2024-01-01T00:00:61Z",
        "2024-01-01T00:00:00+",
        "2024-01-01T00:00:00+16:00",
        "2024-01-01T00:00:00.Z",
        "2024-01-01x",
        "2024-01-01T10",
        "now",
        "",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
}

#[test]
fn naive_timestamps_follow_the_session_zone() {
    let ny = SessionZone::parse("America/New_York");
    let local = |text: &str| parse_timestamp(text).unwrap().utc_micros(Some(&ny));
    assert_eq!(local("2024-01-15T12:00:00"), utc("2024-01-15T17:00:00Z"));
    // Skipped by the spring change: the offset before it (EST).
    assert_eq!(local("2024-03-10T02:30:00"), utc("2024-03-10T07:30:00Z"));
    // Twice in the autumn: the offset after the change (EST).
    assert_eq!(local("2024-11-03T01:30:00"), utc("2024-11-03T06:30:00Z"));
    assert_eq!(
        SessionZone::parse("<+05:30>-05:30"),
        SessionZone::Fixed(19_800)
    );
    assert_eq!(SessionZone::parse("Etc/UTC").offset_of_local(0), Some(0));
    let odd = SessionZone::parse("EST5EDT,M3.2.0,M11.1.0x");
    assert_eq!(odd.offset_of_local(0), None);
    assert_eq!(
        parse_timestamp("2024-01-01T00:00:00Z")
            .unwrap()
            .utc_micros(Some(&odd)),
        utc("2024-01-01T00:00:00Z")
    );
}

#[test]
fn civil_days_agree_with_chrono() {
    use chrono::Datelike;
    let mut date = chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
    let end = chrono::NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
    while date <= end {
        let want = i64::from(date.num_days_from_ce()) - 719_163;
        assert_eq!(
            days_from_civil(date.year(), date.month(), date.day()),
            Some(want),
            "{date}"
        );
        date += chrono::Duration::days(1);
    }
    assert_eq!(days_from_civil(2023, 2, 29), None);
    assert_eq!(days_from_civil(1900, 2, 29), None);
    assert_eq!(days_from_civil(2000, 2, 29), Some(11_016));
    assert_eq!(days_from_civil(2024, 4, 31), None);
}

#[test]
fn dates_times_and_shapes() {
    assert_eq!(parse_date("2000-01-01"), Some(10_957));
    assert_eq!(parse_date("1969-12-31"), Some(-1));
    assert_eq!(parse_date("2024-1-5"), parse_date("2024-01-05"));
    assert_eq!(parse_date("2000-01-01T23:00:00-05:00"), Some(10_957));
    assert_eq!(parse_date("0000-01-01"), None);
    assert_eq!(
        parse_time("13:45:07.5"),
        Some((13 * 3600 + 45 * 60 + 7) * MICROS + 500_000)
    );
    assert_eq!(parse_time("13:45"), Some((13 * 3600 + 45 * 60) * MICROS));
    assert_eq!(parse_time("24:00:00"), Some(MICROS_PER_DAY));
    assert_eq!(parse_time("23:59:60"), Some(MICROS_PER_DAY));
    assert_eq!(parse_time("24:00:01"), None);
    assert_eq!(parse_time("10:00:00+02"), Some(10 * 3600 * MICROS));
    assert_eq!(parse_time("2024-01-05 10:00"), Some(10 * 3600 * MICROS));
    assert_eq!(string_shape("2024-05-06"), StringShape::Date);
    assert_eq!(
        string_shape("2024-05-06T01:02:03Z"),
        StringShape::TimestampTz
    );
    assert_eq!(string_shape("2024-05-06 01:02:03"), StringShape::Timestamp);
    assert_eq!(string_shape("2024-05-06 and more"), StringShape::Other);
    assert_eq!(string_shape("hello"), StringShape::Other);
}

#[test]
fn booleans_as_boolin_reads_them() {
    for (text, want) in [
        ("t", Some(true)),
        ("TRUE", Some(true)),
        (" tr ", Some(true)),
        ("truth", None),
        ("yes", Some(true)),
        ("y", Some(true)),
        ("n", Some(false)),
        ("on", Some(true)),
        ("o", None),
        ("of", Some(false)),
        ("off", Some(false)),
        ("offf", None),
        ("1", Some(true)),
        ("0", Some(false)),
        ("10", None),
        ("", None),
    ] {
        assert_eq!(parse_bool(text), want, "{text:?}");
    }
}

#[test]
fn uuids_as_uuid_in_reads_them() {
    let want = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
    for ok in [
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "{a0eebc99-9c0b4ef8-bb6d-6bb9bd380a11}",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
    ] {
        assert_eq!(parse_uuid(ok), Some(want), "{ok}");
    }
    for bad in [
        "urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
        "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ] {
        assert_eq!(parse_uuid(bad), None, "{bad}");
    }
}

proptest::proptest! {
    /// Fractions of up to six digits, taken as scaled integers, give the microseconds
    /// PostgreSQL's `rint(strtod(".digits") * 1000000)` gives; longer ones go through it.
    #[test]
    fn fractions_of_a_second_round_as_postgresql_does(digits in "[0-9]{1,9}") {
        let value: f64 = format!(".{digits}").parse().unwrap();
        let postgres = (value * 1_000_000.0).round_ties_even() as i64;
        proptest::prop_assert_eq!(fraction_micros(digits.as_bytes()), Some(postgres));
    }
}
