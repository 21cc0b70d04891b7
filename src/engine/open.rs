//! Schedulers of the shaped loads: the open model (one caller per arrival, capped by
//! `max_users`) and the closed model's ramping stages. Both start callers at instants of a
//! pure schedule ([`super::schedule`]) against the run's absolute clock: a caller that cannot
//! start is counted as dropped, one that starts late is counted as a late start, and every
//! start's lag goes into a histogram. Nothing is silently delayed.

use std::sync::Arc;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep_until};

use super::schedule::{LATE_TOLERANCE, user_steps};
use super::users::UserTasks;
use super::{IterationSink, Progress, call, connect, user_loop};
use crate::metrics::{ArrivalStats, DropReason, DroppedArrival, Recorder};
use crate::plan::compile::CompiledPlan;
use crate::plan::load_shape::{ArrivalSpec, Segment};

/// What the schedulers share with the callers they start.
pub(super) struct Shared {
    pub plan: Arc<CompiledPlan>,
    pub conn: Arc<connect::Connection>,
    pub run_start: Instant,
    pub stop: watch::Receiver<bool>,
    pub progress: Arc<Progress>,
    pub sink: Option<IterationSink>,
}

fn us_since(start: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(start).as_micros() as u64
}

/// Merge what finished callers measured, without waiting for the others.
fn drain(tasks: &mut UserTasks, total: &mut Recorder) {
    while let Some(rec) = tasks.try_join_next() {
        total.merge(rec);
    }
}

/// Run one caller that was due at `due`: its start lag is measured when its task begins.
#[allow(clippy::too_many_arguments)]
async fn caller(
    user: u32,
    plan: Arc<CompiledPlan>,
    conn: Arc<connect::Connection>,
    run_start: Instant,
    due: Instant,
    deadline: Option<Instant>,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
    sink: Option<IterationSink>,
    leave: Option<watch::Receiver<bool>>,
) -> Recorder {
    let lag = Instant::now().saturating_duration_since(due);
    let mut rec = user_loop(
        user, plan, conn, run_start, due, deadline, stop, progress, sink, leave,
    )
    .await;
    let mut st = ArrivalStats::default();
    st.started(lag, LATE_TOLERANCE);
    rec.arrivals.get_or_insert_with(Default::default).merge(st);
    rec
}

/// The open model: one caller per arrival, each making one call. An arrival that finds
/// `max_users` callers active is dropped (counted, with its scheduled instant).
pub(super) async fn run_arrivals(spec: &ArrivalSpec, sh: Shared) -> Recorder {
    // Each caller makes exactly one call; calls started before the end run to completion.
    let mut one_call = (*sh.plan).clone();
    one_call.load.iterations = Some(1);
    one_call.load.think_time = None;
    one_call.load.duration = None;
    let one_call = Arc::new(one_call);
    let cap = Arc::new(Semaphore::new(spec.max_users as usize));
    let mut stats = ArrivalStats {
        max_users: Some(spec.max_users),
        ..ArrivalStats::default()
    };
    let mut total = Recorder::default();
    let mut tasks = UserTasks::new(Some(1), sh.run_start);
    let mut stop = sh.stop.clone();
    for (n, offset) in spec.arrivals() {
        let due = sh.run_start + offset;
        tokio::select! {
            _ = sleep_until(due) => {}
            _ = call::wait_stop(&mut stop) => break,
        }
        if *stop.borrow() {
            break;
        }
        stats.scheduled += 1;
        drain(&mut tasks, &mut total);
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            stats.dropped.push(DroppedArrival {
                arrival: n,
                at_us: us_since(sh.run_start, due),
                reason: DropReason::MaxUsers,
            });
            continue;
        };
        let user = u32::try_from(n).unwrap_or(u32::MAX);
        let active = (spec.max_users as usize).saturating_sub(cap.available_permits());
        stats.peak_active = stats.peak_active.max(active as u64);
        let fut = caller(
            user,
            one_call.clone(),
            sh.conn.clone(),
            sh.run_start,
            due,
            None,
            sh.stop.clone(),
            sh.progress.clone(),
            sh.sink.clone(),
            None,
        );
        tasks.spawn(user, async move {
            let rec = fut.await;
            drop(permit);
            rec
        });
    }
    // Arrivals were offered over the whole schedule, or until the run was stopped.
    stats.offered_for = if *stop.borrow() {
        sh.run_start.elapsed().min(spec.duration())
    } else {
        spec.duration()
    };
    drop(sh.sink);
    while let Some(rec) = tasks.join_next().await {
        total.merge(rec);
    }
    total
        .arrivals
        .get_or_insert_with(Default::default)
        .merge(stats);
    total
}

/// The closed model's ramping stages: users start as the target count rises and are asked
/// to leave (finish their call, then stop; the most recently started first) as it falls.
/// The run ends at the end of the last stage (`plan.load.duration`).
pub(super) async fn run_stages(stages: &[Segment], sh: Shared) -> Recorder {
    let deadline = sh
        .plan
        .load
        .duration
        .map(|d| sh.run_start + d)
        .unwrap_or(sh.run_start);
    let mut stats = ArrivalStats::default();
    let mut total = Recorder::default();
    let mut tasks = UserTasks::new(None, sh.run_start);
    let mut active: Vec<watch::Sender<bool>> = Vec::new();
    let mut next_user: u32 = 0;
    let mut stop = sh.stop.clone();
    for (offset, target) in user_steps(stages) {
        let due = sh.run_start + offset;
        tokio::select! {
            _ = sleep_until(due) => {}
            _ = call::wait_stop(&mut stop) => break,
        }
        if *stop.borrow() {
            break;
        }
        drain(&mut tasks, &mut total);
        while (active.len() as u64) < u64::from(target) && due < deadline {
            let (tx, rx) = watch::channel(false);
            stats.scheduled += 1;
            let task = caller(
                next_user,
                sh.plan.clone(),
                sh.conn.clone(),
                sh.run_start,
                due,
                Some(deadline),
                sh.stop.clone(),
                sh.progress.clone(),
                sh.sink.clone(),
                Some(rx),
            );
            tasks.spawn(next_user, task);
            active.push(tx);
            next_user = next_user.saturating_add(1);
        }
        stats.peak_active = stats.peak_active.max(active.len() as u64);
        while (active.len() as u64) > u64::from(target) {
            if let Some(tx) = active.pop() {
                let _ = tx.send(true);
            }
        }
    }
    let offered_until = if *stop.borrow() {
        deadline.min(Instant::now())
    } else {
        deadline
    };
    stats.offered_for = offered_until.saturating_duration_since(sh.run_start);
    drop(sh.sink);
    // Users still wanted at the end stop by the deadline (no new call after it).
    let keep = active;
    while let Some(rec) = tasks.join_next().await {
        total.merge(rec);
    }
    drop(keep);
    total
        .arrivals
        .get_or_insert_with(Default::default)
        .merge(stats);
    total
}

/// Resolves when `leave` turns true (never for a user without one).
pub(super) async fn left(leave: &mut Option<watch::Receiver<bool>>) {
    match leave {
        Some(rx) => call::wait_stop(rx).await,
        None => std::future::pending::<()>().await,
    }
}

/// Whether the user was asked to leave.
pub(super) fn asked_to_leave(leave: &Option<watch::Receiver<bool>>) -> bool {
    leave.as_ref().is_some_and(|rx| *rx.borrow())
}
