//! Cron schedules of modules: `schedule("0 */5 * * * *")`, seconds first, in UTC, as the
//! original ApiTap read them; five-field patterns (minutes first) and aliases such as
//! `@hourly` are accepted too.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A pattern that is not a cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule({text:?}) is not a cron pattern: {reason}")]
pub(crate) struct ScheduleError {
    pub text: String,
    /// croner's words for what is wrong.
    pub reason: String,
}

/// A parsed cron pattern.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    cron: Cron,
}

impl Schedule {
    /// # Errors
    /// A pattern croner cannot read, with its reason.
    pub(crate) fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser.parse(text).map_err(|e| ScheduleError {
            text: text.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Schedule { cron })
    }

    /// The first time after `after` the pattern matches, if it ever does again.
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn seconds_come_first() {
        let every_five_minutes = Schedule::parse("0 */5 * * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 10, 2, 30).unwrap();
        assert_eq!(
            every_five_minutes.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap())
        );
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(
            daily.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap())
        );
        assert!(
            Schedule::parse("every day")
                .unwrap_err()
                .to_string()
                .starts_with("schedule(\"every day\") is not a cron pattern: ")
        );
    }
}
