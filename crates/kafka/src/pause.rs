//! Which partitions a group member wants paused, kept apart from its assignment.
//!
//! librdkafka keeps a partition's *application* pause flag (`RD_KAFKA_TOPPAR_F_APP_PAUSE`)
//! across revoke and re-assign: a partition paused, revoked and assigned again stays paused
//! until the application resumes it by name, and nothing says so (librdkafka exposes the flag
//! neither through its API nor in its statistics). A worker that resumed only the partitions
//! assigned at the moment it resumed forgot the others, and never consumed them again once they
//! came back: after a cluster outage, lag grew without end in a Stable group (issue 12,
//! defect 2). So the intent is kept here, by name, whatever the assignment:
//!
//! - a resume reaches every partition the member paused, assigned or not;
//! - every assignment makes librdkafka's flags agree with the intent: newly assigned partitions
//!   are paused while the member holds, and resumed (a no-op when not paused) otherwise.

use std::collections::BTreeSet;

/// A topic partition, by name.
pub(crate) type Tp = (String, i32);

/// What a member wants paused.
#[derive(Debug, Default)]
pub(crate) struct PauseIntent {
    /// Hold every partition: those assigned now and any assigned later.
    hold: bool,
    /// Partitions this member paused and has not resumed, assigned or not.
    paused: BTreeSet<Tp>,
    /// Partitions revoked while paused: their next assignment says that it resumed them.
    revoked_paused: BTreeSet<Tp>,
}

/// What an assignment asks of librdkafka.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct OnAssign {
    /// Newly assigned partitions to pause (the member holds).
    pub pause: Vec<Tp>,
    /// Newly assigned partitions to resume, clearing any pause flag left from before a revoke.
    pub resume: Vec<Tp>,
    /// Of `resume`, those that were paused when they were revoked.
    pub were_paused: Vec<Tp>,
}

impl PauseIntent {
    /// Starts holding: returns which of the `assigned` partitions to pause now (those not
    /// already paused). Partitions assigned later are paused on assignment.
    pub fn hold(&mut self, assigned: Vec<Tp>) -> Vec<Tp> {
        self.hold = true;
        let fresh: Vec<Tp> = assigned
            .into_iter()
            .filter(|p| !self.paused.contains(p))
            .collect();
        self.paused.extend(fresh.iter().cloned());
        fresh
    }

    /// Stops holding: returns every partition to resume by name, assigned or not.
    pub fn release(&mut self) -> Vec<Tp> {
        self.hold = false;
        std::mem::take(&mut self.paused).into_iter().collect()
    }

    /// Undoes [`PauseIntent::release`] when librdkafka refused the resume, so the next one
    /// tries these again.
    pub fn release_failed(&mut self, partitions: Vec<Tp>) {
        self.paused.extend(partitions);
    }

    /// Whether the member holds its partitions.
    pub fn holds(&self) -> bool {
        self.hold
    }

    /// How many partitions the member has paused.
    pub fn paused(&self) -> usize {
        self.paused.len()
    }

    /// `partitions` were revoked.
    pub fn revoked(&mut self, partitions: &[Tp]) {
        for p in partitions {
            if self.paused.contains(p) {
                self.revoked_paused.insert(p.clone());
            }
        }
    }

    /// `partitions` were assigned (incrementally, or the whole assignment).
    pub fn assigned(&mut self, partitions: &[Tp]) -> OnAssign {
        let mut out = OnAssign::default();
        for p in partitions {
            let was_revoked_paused = self.revoked_paused.remove(p);
            if self.hold {
                self.paused.insert(p.clone());
                out.pause.push(p.clone());
            } else {
                // Not wanted paused. It may still carry librdkafka's flag (a resume by name
                // that librdkafka skipped, or a pause from before it was revoked): resume it.
                self.paused.remove(p);
                if was_revoked_paused {
                    out.were_paused.push(p.clone());
                }
                out.resume.push(p.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".to_string(), p)
    }

    #[test]
    fn a_release_reaches_partitions_revoked_while_paused() {
        let mut i = PauseIntent::default();
        assert_eq!(i.hold(vec![tp(0), tp(1)]), [tp(0), tp(1)]);
        i.revoked(&[tp(0), tp(1)]);
        // Nothing is assigned at the moment of the resume: both are resumed by name anyway.
        assert_eq!(i.release(), [tp(0), tp(1)]);
        assert_eq!(i.paused(), 0);
        // And their next assignment resumes them again, saying they had been paused.
        let on = i.assigned(&[tp(0), tp(1)]);
        assert_eq!(on.resume, [tp(0), tp(1)]);
        assert_eq!(on.were_paused, [tp(0), tp(1)]);
        assert!(on.pause.is_empty());
        assert!(i.assigned(&[tp(0)]).were_paused.is_empty(), "said once");
    }

    #[test]
    fn partitions_assigned_while_holding_are_paused_and_later_released() {
        let mut i = PauseIntent::default();
        assert_eq!(i.hold(vec![tp(0)]), [tp(0)]);
        assert!(i.hold(vec![tp(0)]).is_empty(), "already paused");
        let on = i.assigned(&[tp(1)]);
        assert_eq!(on.pause, [tp(1)]);
        assert!(on.resume.is_empty());
        assert!(i.holds());
        assert_eq!(i.release(), [tp(0), tp(1)]);
        assert!(!i.holds());
    }

    #[test]
    fn assignment_without_a_hold_resumes_everything_assigned() {
        let mut i = PauseIntent::default();
        let on = i.assigned(&[tp(0), tp(1)]);
        assert_eq!(on.resume, [tp(0), tp(1)]);
        assert!(on.were_paused.is_empty() && on.pause.is_empty());
    }

    #[test]
    fn a_failed_release_is_tried_again() {
        let mut i = PauseIntent::default();
        i.hold(vec![tp(0)]);
        let r = i.release();
        i.release_failed(r);
        assert_eq!(i.release(), [tp(0)]);
    }
}
