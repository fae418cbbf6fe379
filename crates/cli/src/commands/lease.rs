//! An in-process copy run's lease on its copy's checkpoint
//! (`relay_core::lease` has the rule and its figures): taken when the run
//! starts, renewed while it works, checked before each write, released
//! when the run ends by itself; `wait_out` waits for every lease recorded.
//!
//! **Invariant:** a lease is recorded and renewed only while the checkpoint
//! still belongs to the run's seed (`seed_ms`), so once a retire has
//! removed it no run can extend its lease past the one the retire reads.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Result};
use relay_aws::operator::{Aws, Cond};
use relay_core::control::Mode;
use relay_core::item::{AttributeValue, Attrs};
use relay_core::lease;
use tokio::time::Instant;

use super::copy::read_checkpoint;
use crate::ctx::{explain, rfc3339, Ctx};

/// Said when a lease cannot be recorded or renewed.
pub const REPLACED: &str = "the copy's checkpoint is gone or belongs to another seed (a restart or replay retired this copy, or another run finished it): this run stops and writes nothing more";

/// Said when a run's lease lapsed before it could renew it.
pub const LAPSED: &str = "this run's lease on the copy lapsed (the machine was suspended, or the control table did not answer in time): it stopped writing; run the same command again to go on from the checkpoints";

/// A run's lease: where it is recorded, and when the renewal that recorded
/// it was sent, by the monotonic and the wall clock.
#[derive(Debug)]
pub struct Lease {
    ckey: Attrs,
    seed_ms: i64,
    attr: String,
    sent: Mutex<(Instant, SystemTime)>,
    /// This machine's wall clock less AWS's time, the least seen at the
    /// lease's take and renewals: AWS's time is carried on the monotonic
    /// clock, which stops while the machine sleeps, and the wall clock does
    /// not.
    wall_ahead_ms: AtomicI64,
}

/// How a renewal went.
enum Renewal {
    Renewed,
    /// The checkpoint no longer holds the run's seed.
    Refused,
    /// A retryable failure: tried again at the next renewal while the
    /// lease holds.
    Failed(anyhow::Error),
}

fn wall_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Lease {
    /// Records a new lease for a run of the copy seeded at `seed_ms`.
    pub async fn take<A: Aws>(ctx: &Ctx<A>, ckey: &Attrs, seed_ms: i64) -> Result<Lease> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run = format!(
            "{:x}-{:04x}-{}",
            std::process::id(),
            fastrand::u16(..),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let now = SystemTime::now();
        let l = Lease {
            ckey: ckey.clone(),
            seed_ms,
            attr: lease::attr(&run),
            sent: Mutex::new((Instant::now(), now)),
            wall_ahead_ms: AtomicI64::new(wall_ms(now) - ctx.now_ms()),
        };
        match l.renew(ctx).await? {
            Renewal::Renewed => Ok(l),
            Renewal::Refused => bail!("{REPLACED}"),
            Renewal::Failed(e) => Err(e),
        }
    }

    /// Records the lease again. None once the lease has lapsed (an error:
    /// the run may have slept, and AWS's time as this process carries it is
    /// then behind, so a lease recorded from it would end before the run's
    /// window), and a permanent failure is an error too.
    async fn renew<A: Aws>(&self, ctx: &Ctx<A>) -> Result<Renewal> {
        if self.left().is_zero() {
            bail!("{LAPSED}");
        }
        let sent = (Instant::now(), SystemTime::now());
        // AWS's time, or the wall clock's advance since it was last seen
        // if that is later (time asleep).
        let ahead = self.wall_ahead_ms.load(Ordering::Relaxed);
        let aws_ms = ctx.now_ms().max(wall_ms(sent.1) - ahead);
        let until = lease::expiry(aws_ms);
        let w = match ctx
            .aws
            .set_attr(
                &ctx.stack.control_table,
                &self.ckey,
                &self.attr,
                Some(AttributeValue::N(until.to_string())),
                &self.ours(),
            )
            .await
        {
            Ok(w) => w,
            Err(e) if e.is_retryable() => return Ok(Renewal::Failed(explain(e, "control table"))),
            Err(e) => return Err(explain(e, "control table")),
        };
        if !w.done {
            return Ok(Renewal::Refused);
        }
        *self.sent.lock().unwrap_or_else(|p| p.into_inner()) = sent;
        self.wall_ahead_ms
            .fetch_min(wall_ms(SystemTime::now()) - ctx.now_ms(), Ordering::Relaxed);
        Ok(Renewal::Renewed)
    }

    fn ours(&self) -> Cond {
        Cond::Equals(
            "seed_ms".into(),
            AttributeValue::N(self.seed_ms.to_string()),
        )
    }

    /// How much longer this run may write (zero: it has lapsed).
    pub fn left(&self) -> Duration {
        let (mono, wall) = *self.sent.lock().unwrap_or_else(|p| p.into_inner());
        lease::left(mono.elapsed(), SystemTime::now().duration_since(wall).ok())
    }

    /// One write of this run: not started once the lease has lapsed, and
    /// abandoned when it lapses. The lease is checked, by both clocks,
    /// every time the write is polled, before the write goes on: after the
    /// machine slept, the SDK's retry waiting on the monotonic clock is not
    /// sent (only a request already handed to the connection can be).
    pub async fn write<T>(&self, w: impl Future<Output = Result<T>>) -> Result<T> {
        let left = self.left();
        if left.is_zero() {
            bail!("{LAPSED}");
        }
        let mut w = std::pin::pin!(w);
        let mut lapse = std::pin::pin!(tokio::time::sleep(left));
        std::future::poll_fn(|cx| {
            // A renewal meanwhile moves the lapse on.
            let left = self.left();
            lapse.as_mut().reset(Instant::now() + left);
            if left.is_zero() || lapse.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(Err(anyhow!("{LAPSED}")));
            }
            w.as_mut().poll(cx)
        })
        .await
    }

    /// Runs `work`, renewing the lease every [`lease::RENEW`]. A renewal
    /// refused (another seed, or the lease lapsed) stops the work (its
    /// writes in flight are abandoned); one that failed is tried again at
    /// the next renewal while the lease still holds (the writes check it).
    pub async fn hold<A: Aws, T>(
        &self,
        ctx: &Ctx<A>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::pin!(work);
        let mut failed: Option<anyhow::Error> = None;
        loop {
            tokio::select! {
                r = &mut work => return r,
                () = tokio::time::sleep(lease::RENEW) => match self.renew(ctx).await {
                    Ok(Renewal::Renewed) => failed = None,
                    Ok(Renewal::Refused) => bail!("{REPLACED}"),
                    Ok(Renewal::Failed(e)) => {
                        ctx.step(&format!("renewing this run's lease failed, trying again: {e:#}"));
                        failed = Some(e);
                    }
                    Err(e) => {
                        return Err(match failed {
                            Some(f) => anyhow!("{e} (the last renewal failed: {f:#})"),
                            None => e,
                        })
                    }
                },
            }
        }
    }

    /// Ends the lease of a run whose every write has ended (not after an
    /// error: a write abandoned in flight may still land, and its lease
    /// then stands until it passes).
    pub async fn release<A: Aws>(&self, ctx: &Ctx<A>) -> Result<()> {
        ctx.aws
            .set_attr(
                &ctx.stack.control_table,
                &self.ckey,
                &self.attr,
                None,
                &self.ours(),
            )
            .await
            .map(|_| ())
            .map_err(|e| explain(e, "control table"))
    }
}

/// Waits until no in-process run that recorded a lease in the checkpoint
/// `ckey` can still write. A run still renewing its lease (another
/// terminal finishing the same copy) is waited for again, up to ten times.
/// With `copying` (a copy's seed), the wait ends early once the control
/// item no longer names that copy in tombstone mode (another run switched
/// it, or a restart replaced it: the caller's own check then says which).
pub async fn wait_out<A: Aws>(
    ctx: &Ctx<A>,
    ckey: &Attrs,
    copying: Option<i64>,
    why: &str,
) -> Result<()> {
    for round in 0..=10 {
        if let Some(seed_ms) = copying {
            if !ctx.control().await?.names_copy(seed_ms, Mode::Tombstone) {
                return Ok(());
            }
        }
        let Some(until) = read_checkpoint(ctx, ckey)
            .await?
            .and_then(|c| lease::all_stopped_by(&c))
            .filter(|t| *t > ctx.now_ms())
        else {
            return Ok(());
        };
        if round == 10 {
            break;
        }
        ctx.wait_until(until, &format!("{why} (until {})", rfc3339(until)))
            .await?;
    }
    bail!("another run of this copy still holds its lease after ten of them: stop it (another terminal?), then run the same command again")
}
