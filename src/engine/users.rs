//! Virtual users as tasks, and what a panic leaves of them. A panic is a planrun bug, but it
//! must not make calls vanish from the verdict: a call that panics fails as `internal_error`
//! (its user goes on), and a user task that panics outside its calls leaves one failed
//! `internal_error` call for each call it owed.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use super::trace::Trace;
use crate::metrics::{Failure, FailureClass, IterationRecord, Recorder};

/// The text of a panic's payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Run one call; a panic inside it fails the call as `internal_error`, with the panic's
/// message, instead of killing its user.
pub(super) async fn guarded(
    call: impl Future<Output = (Trace, Option<Failure>)>,
) -> (Trace, Option<Failure>) {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(payload) => (
            Trace::default(),
            Some(Failure {
                class: FailureClass::InternalError,
                step: String::new(),
                message: format!("planrun panicked: {}", panic_message(&*payload)),
            }),
        ),
    }
}

/// The running users of one load shape. Joining gives each user's recorder; a user whose task
/// panicked (or was cancelled) gives a recorder of failed calls in its place.
pub(super) struct UserTasks {
    set: JoinSet<Recorder>,
    users: HashMap<Id, u32>,
    /// Calls each user owes (the plan's `iterations`, else 1: the call it was in).
    owed: u64,
    run_start: Instant,
}

impl UserTasks {
    pub(super) fn new(owed: Option<u64>, run_start: Instant) -> Self {
        UserTasks {
            set: JoinSet::new(),
            users: HashMap::new(),
            owed: owed.unwrap_or(1).max(1),
            run_start,
        }
    }

    pub(super) fn spawn<F>(&mut self, user: u32, task: F)
    where
        F: Future<Output = Recorder> + Send + 'static,
    {
        let id = self.set.spawn(task).id();
        self.users.insert(id, user);
    }

    /// The next user to finish (None when all have).
    pub(super) async fn join_next(&mut self) -> Option<Recorder> {
        let res = self.set.join_next_with_id().await?;
        Some(self.joined(res))
    }

    /// A user that has already finished, without waiting.
    pub(super) fn try_join_next(&mut self) -> Option<Recorder> {
        let res = self.set.try_join_next_with_id()?;
        Some(self.joined(res))
    }

    fn joined(&mut self, res: Result<(Id, Recorder), JoinError>) -> Recorder {
        match res {
            Ok((id, rec)) => {
                self.users.remove(&id);
                rec
            }
            Err(e) => {
                let user = self.users.remove(&e.id()).unwrap_or(u32::MAX);
                let why = if e.is_panic() {
                    format!("planrun panicked: {}", panic_message(&*e.into_panic()))
                } else {
                    "its task was cancelled".to_string()
                };
                self.lost(user, &why)
            }
        }
    }

    /// What a user lost to a panic leaves: every call it owed, failed.
    fn lost(&self, user: u32, why: &str) -> Recorder {
        let at_us = self.run_start.elapsed().as_micros() as u64;
        let mut rec = Recorder::default();
        for iteration in 0..self.owed {
            rec.iteration(IterationRecord {
                user,
                iteration,
                scenario: "(unknown)".into(),
                start_us: at_us,
                end_us: at_us,
                failure: Some(Failure {
                    class: FailureClass::InternalError,
                    step: String::new(),
                    message: format!("user {user} was lost ({why}); its calls count as failed"),
                }),
                markers: Vec::new(),
                samples: Vec::new(),
            });
        }
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_call_fails_as_internal_error_with_its_message() {
        let (trace, failure) = guarded(async {
            let v: f64 = "1e30".parse().unwrap();
            let _ = std::time::Duration::from_secs_f64(v * 1e300);
            unreachable!()
        })
        .await;
        assert!(trace.samples.is_empty());
        let f = failure.unwrap();
        assert_eq!(f.class, FailureClass::InternalError);
        assert!(f.message.starts_with("planrun panicked: "), "{}", f.message);
        assert!(f.message.contains("to Duration"), "{}", f.message);
        let ok = guarded(async { (Trace::default(), None) }).await;
        assert!(ok.1.is_none());
    }

    #[tokio::test]
    async fn a_panicked_user_leaves_every_call_it_owed_failed() {
        let mut tasks = UserTasks::new(Some(3), Instant::now());
        tasks.spawn(7, async { panic!("boom at user 7") });
        tasks.spawn(8, async {
            let mut rec = Recorder::default();
            rec.iteration(IterationRecord {
                user: 8,
                iteration: 0,
                scenario: "s".into(),
                start_us: 0,
                end_us: 1,
                failure: None,
                markers: Vec::new(),
                samples: Vec::new(),
            });
            rec
        });
        let mut total = Recorder::default();
        while let Some(rec) = tasks.join_next().await {
            total.merge(rec);
        }
        assert_eq!(total.outcomes.len(), 4);
        assert_eq!(total.outcomes.totals().failed, 3);
        assert_eq!(
            total.outcomes.errors.get(&FailureClass::InternalError),
            Some(&3)
        );
        let lost = total.outcomes.failures.sample(10);
        assert!(!lost.is_empty());
        for r in lost {
            assert_eq!(r.user, 7);
            let f = &r.failure;
            assert_eq!(f.class, FailureClass::InternalError);
            assert!(f.message.contains("boom at user 7"), "{}", f.message);
        }
        assert!(tasks.users.is_empty());
    }
}
