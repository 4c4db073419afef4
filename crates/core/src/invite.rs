//! The invite's life in the outbox and what of it counts toward the cap (R7).
//!
//! The store keeps these as text columns; the words here (`key`) are the
//! only spelling, and SQL that filters by them is built from
//! [`InviteState::counted_sql_list`], so the rule "which sends count" is
//! written once.

use serde::{Deserialize, Serialize};

/// Who decided on the invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteKind {
    /// The rules, after a trigger (R2-R8).
    Auto,
    /// A staff member's Enroll Now (R9).
    Manual,
}

impl InviteKind {
    pub const ALL: [InviteKind; 2] = [InviteKind::Auto, InviteKind::Manual];

    pub fn key(self) -> &'static str {
        match self {
            InviteKind::Auto => "auto",
            InviteKind::Manual => "manual",
        }
    }

    pub fn from_key(raw: &str) -> Option<InviteKind> {
        InviteKind::ALL.into_iter().find(|k| k.key() == raw)
    }
}

/// The life of an invite in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteState {
    /// Auto invite waiting for the practice's schedule to open; not counted yet.
    Scheduled,
    /// Decided and counted toward the cap; waiting for delivery.
    Queued,
    /// Handed to a channel.
    Sent,
    /// Failed permanently; does not count toward the cap.
    Failed,
    /// Not sent because of the cap; `next_possible_at` says when one can be.
    Suppressed,
    /// Activation, death, a merge or Enroll Now made it unnecessary.
    Cancelled,
}

impl InviteState {
    pub const ALL: [InviteState; 6] = [
        InviteState::Scheduled,
        InviteState::Queued,
        InviteState::Sent,
        InviteState::Failed,
        InviteState::Suppressed,
        InviteState::Cancelled,
    ];

    pub fn key(self) -> &'static str {
        match self {
            InviteState::Scheduled => "scheduled",
            InviteState::Queued => "queued",
            InviteState::Sent => "sent",
            InviteState::Failed => "failed",
            InviteState::Suppressed => "suppressed",
            InviteState::Cancelled => "cancelled",
        }
    }

    pub fn from_key(raw: &str) -> Option<InviteState> {
        InviteState::ALL.into_iter().find(|s| s.key() == raw)
    }

    /// R7, the one definition: a send counts from the moment it is queued
    /// for a channel (so a burst of clicks cannot outrun delivery) and goes
    /// on counting once sent. A permanent failure does not count (staff fix
    /// the address and send again), nor does an invite cancelled or
    /// suppressed before it went out, nor one still waiting for the
    /// schedule. The store sets `counted_at` when an invite enters `queued`;
    /// an invite counts when it has `counted_at` and its state counts.
    pub fn counts_toward_cap(self) -> bool {
        matches!(self, InviteState::Queued | InviteState::Sent)
    }

    /// The states that count, as an SQL list (`'queued', 'sent'`) for
    /// `state IN (...)`: the store's queries are built from this, never
    /// from a list of their own.
    pub fn counted_sql_list() -> String {
        sql_list(
            InviteState::ALL
                .into_iter()
                .filter(|s| s.counts_toward_cap()),
        )
    }

    /// Waiting to be delivered: what a dispatcher claims, and what
    /// activation, death or a merge cancel.
    pub fn is_pending(self) -> bool {
        matches!(self, InviteState::Scheduled | InviteState::Queued)
    }

    /// The pending states as an SQL list (`'scheduled', 'queued'`).
    pub fn pending_sql_list() -> String {
        sql_list(InviteState::ALL.into_iter().filter(|s| s.is_pending()))
    }
}

/// `'a', 'b'`: the keys are our own constant words, never input.
fn sql_list(states: impl Iterator<Item = InviteState>) -> String {
    states
        .map(|s| format!("'{}'", s.key()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_kind_reads_back_from_its_key() {
        for state in InviteState::ALL {
            assert_eq!(InviteState::from_key(state.key()), Some(state));
        }
        for kind in InviteKind::ALL {
            assert_eq!(InviteKind::from_key(kind.key()), Some(kind));
        }
        assert_eq!(InviteState::from_key("sending"), None);
        assert_eq!(InviteKind::from_key(""), None);
    }

    /// R7: queued and sent count; the rest do not.
    #[test]
    fn r7_which_states_count() {
        let counted: Vec<&str> = InviteState::ALL
            .into_iter()
            .filter(|s| s.counts_toward_cap())
            .map(InviteState::key)
            .collect();
        assert_eq!(counted, ["queued", "sent"]);
        assert_eq!(InviteState::counted_sql_list(), "'queued', 'sent'");
        assert_eq!(InviteState::pending_sql_list(), "'scheduled', 'queued'");
    }

    #[test]
    fn serde_uses_the_keys() {
        for state in InviteState::ALL {
            let json = serde_json::to_string(&state).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", state.key()));
        }
    }
}
