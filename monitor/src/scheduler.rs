//! The scheduler: enqueues each due schedule's operation with source `cron`,
//! exactly once per fire time. The fire is claimed by moving the schedule's
//! `last_fire_at` forward with a conditional update in the same transaction
//! as the insert, so a second monitor finds it already done; the insert also
//! carries the idempotency key `schedule:<name>:<fire time>` as a backstop.
//! Fires missed while no monitor ran collapse into one (the latest).
//! A fire time is a whole second (`cron::latest_due`), the same for two
//! monitors a few milliseconds apart.

use std::sync::Arc;

use opsqueue_shared::names::Label;
use opsqueue_shared::store::{self, Counters, Inserted, family_label, names};
use opsqueue_shared::time::{Timestamp, to_db};
use opsqueue_shared::wake::{Role, Waker};
use opsqueue_shared::{Action, OperationId, OperationRequest, Store, StoreError, cron};

pub struct Scheduler {
    store: Store,
    waker: Arc<Waker>,
}

#[derive(Debug, Default, PartialEq)]
pub struct FireReport {
    /// (schedule name, fire time, operation id) for each fire enqueued.
    pub fired: Vec<(String, Timestamp, OperationId)>,
    /// Schedules that could not fire (bad cron or action), with the reason.
    pub broken: Vec<(String, String)>,
}

impl Scheduler {
    pub fn new(store: Store, waker: Arc<Waker>) -> Self {
        Self { store, waker }
    }
}

impl crate::service::Service for Scheduler {
    const NAME: &'static str = "scheduler";
    type Report = FireReport;

    fn run_once(&self, now: Timestamp) -> Result<FireReport, StoreError> {
        let mut report = FireReport::default();
        let schedules = self.store.read(store::schedule_list)?;
        for schedule in schedules.into_iter().filter(|s| s.enabled) {
            let cron = match cron::parse(&schedule.cron) {
                Ok(cron) => cron,
                Err(e) => {
                    report.broken.push((schedule.name, e.to_string()));
                    continue;
                }
            };
            let after = schedule.last_fire_at.unwrap_or(schedule.created_at);
            let Some(fire_at) = cron::latest_due(&cron, after, now) else {
                continue;
            };
            let request = match request_for(&schedule, fire_at) {
                Ok(request) => request,
                Err(reason) => {
                    report.broken.push((schedule.name, reason));
                    continue;
                }
            };
            let fired = self.store.write(|tx| {
                if !store::schedule_mark_fired(tx, &schedule.name, fire_at)? {
                    return Ok(None);
                }
                let inserted = store::operation_insert(tx, &request.prepare(now))?;
                if let Inserted::Created(op) = &inserted {
                    let mut counters = Counters::default();
                    counters.add(names::ENQUEUED, &family_label(op.family()), 1.0);
                    store::counters_apply(tx, &counters)?;
                }
                Ok(Some(inserted.operation().id))
            })?;
            if let Some(id) = fired {
                tracing::info!(schedule = schedule.name, fire_at = %to_db(fire_at), %id, "schedule fired");
                report.fired.push((schedule.name, fire_at, id));
            }
        }
        for (name, reason) in &report.broken {
            tracing::error!(schedule = name, reason, "schedule cannot fire");
        }
        if !report.fired.is_empty() {
            self.waker.wake(Role::Worker);
        }
        Ok(report)
    }

    fn is_noteworthy(report: &FireReport) -> bool {
        !report.fired.is_empty() || !report.broken.is_empty()
    }
}

fn request_for(schedule: &store::Schedule, fire_at: Timestamp) -> Result<OperationRequest, String> {
    let action =
        Action::parse(&schedule.kind, schedule.payload.clone()).map_err(|e| e.to_string())?;
    let mut request = OperationRequest::new(action);
    request.source = Label::cron();
    request.target = Label::parse(&schedule.target).map_err(|e| e.to_string())?;
    request.priority = Some(schedule.priority);
    request.timeout_secs = schedule.timeout_secs;
    request.max_attempts = schedule.max_attempts;
    request.idempotency_key = Some(format!("schedule:{}:{}", schedule.name, to_db(fire_at)));
    Ok(request)
}
