//! Synthetic patients for `enroll demo`, from a seeded generator: the same
//! seed gives the same patients, and no real person's data is involved.
//!
//! The mix is chosen to show every status: most charts complete, some with a
//! missing or invalid required field, a few with invalid cell phones, a few
//! already active.

use enroll_core::Demographics;
use jiff::civil::Date;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FIRST_NAMES: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "Mateo",
    "Mia", "Lucas", "Amelia", "Mason", "Harper", "Ethan", "Evelyn", "Logan", "Camila", "Aiden",
    "Sofía", "José", "Grace", "Wei", "Priya", "Kwame", "Aaliyah", "Dmitri", "Yuki", "Fatima",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Nguyen",
    "O'Brien",
    "Patel",
    "Kim",
    "Okafor",
    "Müller",
    "Chen",
    "Ramírez",
    "Cohen",
];

const ZIPS: &[&str] = &[
    "02139", "02144", "02453", "01701", "02116", "02474", "01890", "02155",
];

const MAIL_DOMAINS: &[&str] = &["example.com", "example.org", "example.net"];

/// One generated chart.
pub struct SyntheticPatient {
    pub mrn: String,
    pub demographics: Demographics,
    pub activated: bool,
}

/// `count` patients from `seed`, born between 1930 and `today`.
pub fn patients(seed: u64, count: usize, today: Date) -> Vec<SyntheticPatient> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|i| patient(&mut rng, i, today)).collect()
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn patient(rng: &mut StdRng, index: usize, today: Date) -> SyntheticPatient {
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    let days_old = rng.random_range(0..(today.year() as i64 - 1930) * 365);
    let dob = today
        .checked_sub(jiff::Span::new().days(days_old))
        .unwrap_or(today);
    let email_user: String = format!("{}.{}{}", first, last, index)
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let mut d = Demographics {
        first_name: Some(first.to_string()),
        last_name: Some(last.to_string()),
        date_of_birth: Some(dob.to_string()),
        birth_sex: Some(if rng.random_bool(0.5) { "F" } else { "M" }.to_string()),
        zip: Some(pick(rng, ZIPS).to_string()),
        email: Some(format!("{email_user}@{}", pick(rng, MAIL_DOMAINS))),
        // 555-01xx numbers are reserved for fiction.
        cell_phone: rng
            .random_bool(0.6)
            .then(|| format!("(617) 555-01{:02}", rng.random_range(0..100))),
    };
    spoil_some_fields(rng, &mut d);
    SyntheticPatient {
        mrn: format!("MRN{:06}", index + 1),
        demographics: d,
        activated: rng.random_bool(0.03),
    }
}

/// About one chart in six gets a problem staff must fix.
fn spoil_some_fields(rng: &mut StdRng, d: &mut Demographics) {
    match rng.random_range(0..100) {
        0..=5 => d.email = None,
        6..=7 => d.email = Some("not-an-email".into()),
        8..=9 => d.zip = Some("2139".into()),
        10..=11 => d.birth_sex = None,
        12 => d.date_of_birth = None,
        13..=14 => d.cell_phone = Some("555-12".into()),
        15 => d.birth_sex = Some("UNK".into()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enroll_core::check;

    #[test]
    fn same_seed_same_patients_with_a_mix_of_problems() {
        let today = Date::constant(2026, 11, 25);
        let a = patients(7, 1000, today);
        let b = patients(7, 1000, today);
        assert_eq!(a.len(), 1000);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.demographics == y.demographics && x.mrn == y.mrn)
        );
        let incomplete = a
            .iter()
            .filter(|p| check(&p.demographics, today).valid.is_none())
            .count();
        assert!(
            (80..=250).contains(&incomplete),
            "{incomplete} incomplete charts"
        );
        let activated = a.iter().filter(|p| p.activated).count();
        assert!((5..=60).contains(&activated), "{activated} activated");
        let no_email = a.iter().filter(|p| p.demographics.email.is_none()).count();
        assert!(no_email > 20, "{no_email} without email");
    }
}
