use chrono::{Duration, NaiveDateTime};

/// Certificates that live at least this long renew `renew_before_days`
/// before they expire; shorter ones when a third of their life remains.
const LONG_LIVED: Duration = Duration::days(90);

/// When a certificate issued at `issued_at` and expiring at `expires_at`
/// is due for renewal.
pub fn renew_at(
    issued_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    renew_before_days: u32,
) -> NaiveDateTime {
    let lifetime = expires_at - issued_at;
    if lifetime < LONG_LIVED {
        expires_at - lifetime / 3
    } else {
        expires_at - Duration::days(renew_before_days.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc() + Duration::days(days)
    }

    #[test]
    fn long_lived_certificates_renew_days_before() {
        assert_eq!(renew_at(at(0), at(90), 30), at(60));
        assert_eq!(renew_at(at(0), at(5 * 365), 30), at(5 * 365 - 30));
    }

    #[test]
    fn short_lived_certificates_renew_at_two_thirds() {
        assert_eq!(renew_at(at(0), at(6), 30), at(4));
        let hour = Duration::hours(1);
        assert_eq!(renew_at(at(0), at(0) + hour * 3, 30), at(0) + hour * 2);
    }
}
