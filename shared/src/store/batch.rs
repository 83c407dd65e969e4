//! Group commit. A [`WriteBatcher`] owns one connection on a thread of its
//! own; callers submit requests and await their answers, and the thread
//! commits whatever has queued up meanwhile in one `BEGIN IMMEDIATE`
//! transaction. Durability (`synchronous = FULL`) then costs one fsync per
//! batch instead of one per request, and nobody is answered before the
//! commit that holds their write.
//!
//! If a batch fails as a whole, its requests are applied again one at a time
//! so that one bad request cannot fail its neighbours.

use std::sync::mpsc;

use rusqlite::Transaction;
use tokio::sync::oneshot;

use super::{Result, Store, StoreError, write_on};

type Job<Req, Resp> = (Req, oneshot::Sender<Result<Resp>>);

pub struct WriteBatcher<Req, Resp> {
    sender: mpsc::Sender<Job<Req, Resp>>,
}

impl<Req, Resp> Clone for WriteBatcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<Req, Resp> WriteBatcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the writer thread. `apply` turns a batch into one answer per
    /// request, inside the transaction; `after_commit` runs after each
    /// commit (to wake other processes), with the batch size.
    pub fn spawn<F, A>(
        store: &Store,
        name: &str,
        max_batch: usize,
        mut apply: F,
        after_commit: A,
    ) -> Result<Self>
    where
        F: FnMut(&Transaction, &[Req]) -> Result<Vec<Resp>> + Send + 'static,
        A: Fn(usize) + Send + 'static,
    {
        let mut conn = store.connection()?;
        let space = store.space();
        let (sender, receiver) = mpsc::channel::<Job<Req, Resp>>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < max_batch {
                        match receiver.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let (requests, replies): (Vec<Req>, Vec<_>) = jobs.into_iter().unzip();
                    match write_on(&mut conn, &space, &mut |tx| apply(tx, &requests)) {
                        Ok(answers) => {
                            after_commit(requests.len());
                            for (reply, answer) in replies.into_iter().zip(answers) {
                                let _ = reply.send(Ok(answer));
                            }
                        }
                        Err(e) if requests.len() == 1 => {
                            let _ = replies.into_iter().next().expect("one").send(Err(e));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, size = requests.len(), "batch failed; applying its requests one by one");
                            for (request, reply) in requests.into_iter().zip(replies) {
                                let one = std::slice::from_ref(&request);
                                let answer = write_on(&mut conn, &space, &mut |tx| apply(tx, one))
                                    .map(|mut answers| answers.pop().expect("one answer per request"));
                                if answer.is_ok() {
                                    after_commit(1);
                                }
                                let _ = reply.send(answer);
                            }
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Task(format!("cannot start {name}: {e}")))?;
        Ok(Self { sender })
    }

    /// Queues a request and waits until the transaction holding it committed.
    pub async fn submit(&self, request: Req) -> Result<Resp> {
        self.queue(request).await
    }

    /// Queues a request now, so it is ordered before anything queued later,
    /// and returns the future of its answer (which may be dropped).
    pub fn queue(&self, request: Req) -> impl Future<Output = Result<Resp>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .sender
            .send((request, reply))
            .map_err(|_| StoreError::Task("the writer thread has stopped".into()));
        async move {
            sent?;
            answer
                .await
                .map_err(|_| StoreError::Task("the writer thread dropped a request".into()))?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    /// Polls a submission once: its request is then queued at the writer,
    /// whatever happens to the answer.
    fn queue_now<F: std::future::Future>(submission: std::pin::Pin<&mut F>) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = submission.poll(&mut cx);
    }

    #[tokio::test]
    async fn concurrent_submissions_are_committed_together_and_each_answered() {
        let (store, _dir) = testing::store();
        store
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")?))
            .unwrap();
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = commits.clone();
        let batcher = WriteBatcher::spawn(
            &store,
            "test-writer",
            64,
            |tx, values: &[i64]| {
                let mut answers = Vec::new();
                for v in values {
                    tx.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                    answers.push(v * 2);
                }
                Ok(answers)
            },
            move |_| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        )
        .unwrap();
        // Another connection holds the write lock while all 200 requests
        // queue up behind the writer's first batch.
        let mut blocker = store.connection().unwrap();
        let lock = blocker
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let mut submissions: Vec<_> = (0..200).map(|v| Box::pin(batcher.submit(v))).collect();
        for submission in &mut submissions {
            queue_now(submission.as_mut());
        }
        lock.commit().unwrap();
        for (v, submission) in submissions.into_iter().enumerate() {
            assert_eq!(submission.await.unwrap(), v as i64 * 2);
        }
        let rows: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, 200);
        // The first batch (1 to 64 requests, taken before the lock blocked
        // it), then the other requests in batches of 64: at most 1 + 4.
        let commits = commits.load(std::sync::atomic::Ordering::SeqCst);
        assert!(commits <= 5, "200 submissions took {commits} commits");
    }

    #[tokio::test]
    async fn one_bad_request_does_not_fail_its_batch() {
        let (store, _dir) = testing::store();
        store
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE t (v INTEGER NOT NULL CHECK (v >= 0))")?))
            .unwrap();
        let batcher = WriteBatcher::spawn(
            &store,
            "test-writer",
            64,
            |tx, values: &[i64]| {
                for v in values {
                    tx.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                }
                Ok(vec![(); values.len()])
            },
            |_| {},
        )
        .unwrap();
        // Hold the write lock so the requests queue up behind the first.
        let mut blocker = store.connection().unwrap();
        let lock = blocker
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let mut tasks = Vec::new();
        for v in [1, -1, 2] {
            let b = batcher.clone();
            tasks.push(tokio::spawn(async move { b.submit(v).await }));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        lock.commit().unwrap();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert!(
            results[0].is_ok() && results[1].is_err() && results[2].is_ok(),
            "{results:?}"
        );
        let rows: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, 2);
    }
}
