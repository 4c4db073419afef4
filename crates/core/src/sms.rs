//! R13: at most one text a day and three a week to one number.
//!
//! The store counts the texts a number got (and the ones the current batch
//! is about to send, since a batch writes its deliveries at the end); the
//! limits and the decision are here, once.

use jiff::SignedDuration;

/// Texts allowed to one number in any [`SMS_DAY`].
pub const SMS_PER_DAY: i64 = 1;
/// Texts allowed to one number in any [`SMS_WEEK`].
pub const SMS_PER_WEEK: i64 = 3;
/// The "day" of R13: a rolling 24 hours, not the practice's calendar day,
/// so a text at 23:59 and one at 00:01 do not both go.
pub const SMS_DAY: SignedDuration = SignedDuration::from_hours(24);
/// The "week" of R13: a rolling 7 x 24 hours.
pub const SMS_WEEK: SignedDuration = SignedDuration::from_hours(7 * 24);

/// The texts one number got, counted by the store: those handed to the
/// provider (or being handed over) in the last [`SMS_DAY`] and the last
/// [`SMS_WEEK`], plus those already planned in the batch being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextsToNumber {
    pub last_day: i64,
    pub last_week: i64,
}

/// True when one more text to the number keeps it within both limits.
pub fn may_text(texts: TextsToNumber) -> bool {
    texts.last_day < SMS_PER_DAY && texts.last_week < SMS_PER_WEEK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R13's day and week are rolling spans of 24 and 7 x 24 hours.
    #[test]
    fn r13_the_day_and_the_week_are_24_and_168_hours() {
        assert_eq!(SMS_DAY, SignedDuration::from_secs(24 * 3600));
        assert_eq!(SMS_WEEK, SignedDuration::from_secs(168 * 3600));
    }

    /// R13 at its boundaries: the day's limit is 1, the week's 3, and
    /// either one stops the text.
    #[test]
    fn r13_one_a_day_three_a_week() {
        #[rustfmt::skip]
        let rows: &[(&str, i64, i64, bool)] = &[
            ("nothing sent yet", 0, 0, true),
            ("one today", 1, 1, false),
            ("two this week, none today", 0, 2, true),
            ("three this week, none today", 0, 3, false),
            ("one today, three this week", 1, 3, false),
            ("more than the limits", 5, 9, false),
        ];
        for &(name, last_day, last_week, allowed) in rows {
            let texts = TextsToNumber {
                last_day,
                last_week,
            };
            assert_eq!(may_text(texts), allowed, "{name}: {texts:?}");
        }
    }
}
