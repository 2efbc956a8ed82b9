//! The one rule every family's training loops follow, between steps and after each loss: stop
//! when the user asks, time out when the cell's time — counted from its start, whichever
//! loop is running — is up, and keep the loss trace up to the first loss that is not finite,
//! which ends the run as diverged.

use super::Record;
use randbench_core::units::Seconds;
use randbench_schema::{Observer, Status, TRACE_STEPS};
use std::time::Instant;

/// A cell's clock and budget.
#[derive(Clone, Copy, Debug)]
pub struct Guard {
    started: Instant,
    timeout: Option<Seconds>,
}

/// What a loss says about the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    Finite,
    /// Not finite, at this step (from 1).
    Diverged {
        step: usize,
    },
}

impl Guard {
    pub fn new(started: Instant, timeout: Option<Seconds>) -> Self {
        Guard { started, timeout }
    }

    /// Whether the loop must stop before its next step: the user asked (`Interrupted`) or the
    /// cell's time is up (`Timeout`); the reason goes into the record.
    pub fn halt(&self, obs: &dyn Observer, record: &mut Record) -> bool {
        let why = if obs.should_stop() {
            Status::Interrupted
        } else if self.timeout.is_some_and(|t| self.started.elapsed().as_secs_f64() > t.0) {
            Status::Timeout
        } else {
            return false;
        };
        record.status = why;
        true
    }

    /// A step's loss: a finite one joins the trace (while `trace` and the trace has room);
    /// one that is not finite does not, and says where the run diverged.
    pub fn loss(record: &mut Record, step: usize, loss: f64, trace: bool) -> Loss {
        if !loss.is_finite() {
            return Loss::Diverged { step };
        }
        if trace && record.step_losses.len() < TRACE_STEPS {
            record.step_losses.push(loss as f32);
        }
        Loss::Finite
    }

    /// Records a divergence as the cell's: its status and step.
    pub fn diverged(record: &mut Record, step: usize) {
        record.status = Status::Diverged;
        record.diverged_at.get_or_insert(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use randbench_schema::Progress;

    struct Stop(bool);
    impl Observer for Stop {
        fn progress(&mut self, _: Progress) {}
        fn should_stop(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn a_loop_halts_for_the_user_and_at_the_cells_time_counted_from_its_start() {
        let mut r = Record::default();
        let now = Guard::new(Instant::now(), Some(Seconds(60.0)));
        assert!(!now.halt(&Stop(false), &mut r));
        assert!(now.halt(&Stop(true), &mut r) && r.status == Status::Interrupted);
        let long_ago = Instant::now() - std::time::Duration::from_secs(61);
        let late = Guard::new(long_ago, Some(Seconds(60.0)));
        assert!(late.halt(&Stop(false), &mut r) && r.status == Status::Timeout);
        assert!(!Guard::new(long_ago, None).halt(&Stop(false), &mut Record::default()));
    }

    #[test]
    fn the_trace_ends_before_the_first_loss_that_is_not_finite() {
        let mut r = Record::default();
        assert_eq!(Guard::loss(&mut r, 1, 2.5, true), Loss::Finite);
        assert_eq!(Guard::loss(&mut r, 2, 1.5, false), Loss::Finite);
        assert_eq!(Guard::loss(&mut r, 3, f64::NAN, true), Loss::Diverged { step: 3 });
        assert_eq!(r.step_losses, vec![2.5]);
        Guard::diverged(&mut r, 3);
        Guard::diverged(&mut r, 7);
        assert_eq!((r.status, r.diverged_at), (Status::Diverged, Some(3)));
    }
}
