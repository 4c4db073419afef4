//! What a staff member may do. Front desk: search, view, edit
//! demographics, Enroll Now, resend. Administrator: all of that plus the
//! practice's settings (templates, facility mapping, and what the staff UI
//! adds next).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    FrontDesk,
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::FrontDesk, Role::Admin];

    /// The stored word. The front desk is `staff`, the word the table held
    /// before roles were typed, so no row needs rewriting.
    pub fn key(self) -> &'static str {
        match self {
            Role::FrontDesk => "staff",
            Role::Admin => "admin",
        }
    }

    /// The inverse of [`Role::key`].
    pub fn from_key(key: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.key() == key)
    }

    /// What an administrator types (`front-desk`, `admin`; the stored
    /// `staff` too), any case.
    pub fn from_name(name: &str) -> Option<Role> {
        match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "front-desk" | "frontdesk" | "staff" => Some(Role::FrontDesk),
            "admin" | "administrator" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::FrontDesk => "front desk",
            Role::Admin => "administrator",
        })
    }
}

/// Which practices' patients a staff user may see and change. A search
/// never returns, and a chart never opens, a patient outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PracticeScope {
    /// An administrator assigned to no practice: the IT administrator of
    /// the whole install.
    All,
    /// The practices the user works for (possibly none: sees nothing).
    Only(Vec<i64>),
}

impl PracticeScope {
    /// An administrator with no practices works for all; anyone else
    /// works for exactly the practices given.
    pub fn for_user(role: Role, practices: Vec<i64>) -> PracticeScope {
        if role.is_admin() && practices.is_empty() {
            PracticeScope::All
        } else {
            PracticeScope::Only(practices)
        }
    }

    pub fn allows(&self, practice_id: i64) -> bool {
        match self {
            PracticeScope::All => true,
            PracticeScope::Only(ids) => ids.contains(&practice_id),
        }
    }

    /// The practice ids to filter by; `None` means no filter.
    pub fn ids(&self) -> Option<&[i64]> {
        match self {
            PracticeScope::All => None,
            PracticeScope::Only(ids) => Some(ids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_administrator_without_practices_works_for_all() {
        let all = PracticeScope::for_user(Role::Admin, vec![]);
        assert!(all.allows(1) && all.allows(99));
        let front_desk = PracticeScope::for_user(Role::FrontDesk, vec![]);
        assert!(
            !front_desk.allows(1),
            "a front desk with no practice sees no one"
        );
        let two = PracticeScope::for_user(Role::Admin, vec![1, 2]);
        assert!(two.allows(2) && !two.allows(3));
        assert_eq!(two.ids(), Some(&[1, 2][..]));
        assert_eq!(all.ids(), None);
    }

    #[test]
    fn keys_and_names_read_back() {
        for role in Role::ALL {
            assert_eq!(Role::from_key(role.key()), Some(role));
            assert_eq!(Role::from_name(role.key()), Some(role));
        }
        assert_eq!(Role::from_name("Front-Desk"), Some(Role::FrontDesk));
        assert_eq!(Role::from_name(" front_desk "), Some(Role::FrontDesk));
        assert_eq!(Role::from_name("Administrator"), Some(Role::Admin));
        assert_eq!(Role::from_name("root"), None);
        assert_eq!(Role::from_key("Admin"), None, "stored keys are exact");
        assert!(Role::Admin.is_admin() && !Role::FrontDesk.is_admin());
        assert_eq!(Role::FrontDesk.to_string(), "front desk");
        assert_eq!(Role::Admin.to_string(), "administrator");
    }
}
