//! Passwords, of staff users and of patient accounts, hashed with argon2id
//! in one way. Patients' new passwords also need a minimum length and zxcvbn's strength
//! estimate (score 3 of 4: "safely unguessable" against online attacks),
//! hashed with argon2id (the argon2 crate's defaults, RFC 9106's second
//! recommended option) in the PHC string format.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Why a password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordProblem {
    TooShort,
    TooWeak,
}

/// zxcvbn's score a password needs (0-4).
const MIN_SCORE: u8 = 3;

/// Checks `password`; `personal` are words a guesser would try first (the
/// username, the first name, the practice's name).
pub(crate) fn check_password(
    password: &str,
    min_length: usize,
    personal: &[&str],
) -> Result<(), PasswordProblem> {
    if password.chars().count() < min_length {
        return Err(PasswordProblem::TooShort);
    }
    let score: u8 = zxcvbn::zxcvbn(password, personal).score().into();
    if score < MIN_SCORE {
        return Err(PasswordProblem::TooWeak);
    }
    Ok(())
}

/// The argon2id PHC string of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    // 128 bits of salt from our own generator (the crate's needs getrandom).
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches a stored PHC string; a string that cannot
/// be read matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_strength_are_both_needed() {
        let personal = ["rosa@example.org", "Rosa"];
        assert_eq!(
            check_password("short", 10, &personal),
            Err(PasswordProblem::TooShort)
        );
        assert_eq!(
            check_password("password123", 10, &personal),
            Err(PasswordProblem::TooWeak)
        );
        assert_eq!(
            check_password("rosa@example.org", 10, &personal),
            Err(PasswordProblem::TooWeak)
        );
        assert_eq!(
            check_password("correct horse battery staple", 10, &personal),
            Ok(())
        );
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let phc = hash_password("correct horse battery staple").unwrap_or_default();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("x", "not a hash"));
    }
}
