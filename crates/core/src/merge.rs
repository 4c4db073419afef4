//! HL7 A40: what the surviving chart keeps when another chart is merged
//! into it. Every flag combines in the safe direction, so a merge never
//! undoes an opt-out, a death, a response or an activation that either
//! chart recorded.

use jiff::Timestamp;

use crate::policy::PatientResponse;

/// The flags of one chart that a merge combines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChartFlags {
    pub activated_at: Option<Timestamp>,
    pub deceased: bool,
    pub email_opted_out: bool,
    pub sms_opted_out: bool,
    pub response: Option<PatientResponse>,
    pub preferred_language: Option<String>,
}

/// The survivor's flags after `merged` is merged into `survivor`: the
/// earlier activation (the patient is active since the first one), death
/// and opt-outs from either chart, and the survivor's response and
/// language unless it has none.
pub fn merged_flags(survivor: ChartFlags, merged: ChartFlags) -> ChartFlags {
    ChartFlags {
        activated_at: earliest(survivor.activated_at, merged.activated_at),
        deceased: survivor.deceased || merged.deceased,
        email_opted_out: survivor.email_opted_out || merged.email_opted_out,
        sms_opted_out: survivor.sms_opted_out || merged.sms_opted_out,
        response: survivor.response.or(merged.response),
        preferred_language: survivor.preferred_language.or(merged.preferred_language),
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Option<Timestamp> {
        Timestamp::from_second(second).ok()
    }

    fn flags(change: impl FnOnce(&mut ChartFlags)) -> ChartFlags {
        let mut flags = ChartFlags::default();
        change(&mut flags);
        flags
    }

    /// Each flag on its own, from either side, and both sides set.
    #[test]
    fn a_merge_keeps_the_safe_side_of_every_flag() {
        use PatientResponse::{Declined, Deferred};
        let es = || Some("es".to_string());
        let en = || Some("en".to_string());
        #[rustfmt::skip]
        let rows: Vec<(&str, ChartFlags, ChartFlags, ChartFlags)> = vec![
            ("nothing set", flags(|_| {}), flags(|_| {}), flags(|_| {})),
            ("survivor activated", flags(|f| f.activated_at = at(100)), flags(|_| {}), flags(|f| f.activated_at = at(100))),
            ("merged activated", flags(|_| {}), flags(|f| f.activated_at = at(100)), flags(|f| f.activated_at = at(100))),
            ("both activated: the earlier, merged's", flags(|f| f.activated_at = at(200)), flags(|f| f.activated_at = at(100)), flags(|f| f.activated_at = at(100))),
            ("both activated: the earlier, survivor's", flags(|f| f.activated_at = at(100)), flags(|f| f.activated_at = at(200)), flags(|f| f.activated_at = at(100))),
            ("survivor deceased", flags(|f| f.deceased = true), flags(|_| {}), flags(|f| f.deceased = true)),
            ("merged deceased", flags(|_| {}), flags(|f| f.deceased = true), flags(|f| f.deceased = true)),
            ("survivor opted out of email", flags(|f| f.email_opted_out = true), flags(|_| {}), flags(|f| f.email_opted_out = true)),
            ("merged opted out of email", flags(|_| {}), flags(|f| f.email_opted_out = true), flags(|f| f.email_opted_out = true)),
            ("survivor opted out of texts", flags(|f| f.sms_opted_out = true), flags(|_| {}), flags(|f| f.sms_opted_out = true)),
            ("merged opted out of texts", flags(|_| {}), flags(|f| f.sms_opted_out = true), flags(|f| f.sms_opted_out = true)),
            ("survivor's response", flags(|f| f.response = Some(Deferred)), flags(|_| {}), flags(|f| f.response = Some(Deferred))),
            ("merged's response", flags(|_| {}), flags(|f| f.response = Some(Declined)), flags(|f| f.response = Some(Declined))),
            ("both responded: the survivor's", flags(|f| f.response = Some(Deferred)), flags(|f| f.response = Some(Declined)), flags(|f| f.response = Some(Deferred))),
            ("merged's language", flags(|_| {}), flags(|f| f.preferred_language = es()), flags(|f| f.preferred_language = es())),
            ("both languages: the survivor's", flags(|f| f.preferred_language = en()), flags(|f| f.preferred_language = es()), flags(|f| f.preferred_language = en())),
        ];
        for (name, survivor, merged, expected) in rows {
            assert_eq!(merged_flags(survivor, merged), expected, "{name}");
        }
    }
}
