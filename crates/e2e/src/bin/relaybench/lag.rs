//! The lag phase: new items at a steady rate, the target polled until each
//! appears.

use super::*;

/// One steady-rate lag run.
#[derive(Debug)]
pub(crate) struct Lag {
    pub(crate) rate: u32,
    pub(crate) written: usize,
    pub(crate) achieved: f64,
    /// Lags in ms, sorted.
    pub(crate) lags: Vec<i64>,
    pub(crate) polls: u64,
    pub(crate) cycle_mean_ms: f64,
    pub(crate) cycle_max_ms: f64,
}

impl Lag {
    pub(crate) fn pct(&self, p: f64) -> i64 {
        if self.lags.is_empty() {
            return -1;
        }
        let i = ((p * self.lags.len() as f64).ceil() as usize).clamp(1, self.lags.len());
        self.lags[i - 1]
    }
}

/// Writes `rate` new items a second for `secs` seconds to the source and
/// polls the target for them; see the module doc.
pub(crate) async fn lag_run(
    local: &Local,
    stack: &Stack,
    rate: u32,
    secs: u32,
    poll: Duration,
) -> Result<Lag> {
    let n = u64::from(rate) * u64::from(secs);
    let prefix = format!("lag{rate}");
    let written: Mutex<Vec<HashMap<String, Av>>> = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let (source, target) = (stack.source_table.as_str(), stack.target_table.as_str());

    let writer = async {
        let t0 = tokio::time::Instant::now();
        let began = Instant::now();
        let (prefix, written) = (&prefix, &written);
        let r = stream::iter(0..n)
            .map(|i| async move {
                let at = Duration::from_secs_f64(i as f64 / f64::from(rate));
                tokio::time::sleep_until(t0 + at).await;
                let mut rng = fastrand::Rng::with_seed(i);
                let mut it = item(prefix, i, i, &mut rng);
                it.insert("written_ms".into(), Av::N(now_ms().to_string()));
                local
                    .ddb
                    .put_item()
                    .table_name(source)
                    .set_item(Some(it))
                    .send()
                    .await
                    .map_err(sdk)
                    .context("steady put")?;
                written
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push(key(prefix, i));
                Ok::<_, anyhow::Error>(())
            })
            .buffer_unordered(LAG_PUTS_IN_FLIGHT)
            .try_collect::<()>()
            .await;
        done.store(true, Ordering::Relaxed);
        r.map(|()| began.elapsed())
    };

    let poller = async {
        let mut outstanding: HashMap<String, HashMap<String, Av>> = HashMap::new();
        let mut lags = Vec::new();
        let (mut polls, mut cycles, mut cycle_sum, mut cycle_max) = (0u64, 0u64, 0.0f64, 0.0f64);
        let mut writes_done_at: Option<Instant> = None;
        let max_polls = (u64::from(secs) * 1000 + LAG_TAIL.as_millis() as u64 * 2)
            / (poll.as_millis() as u64).max(1)
            + 1000;
        let mut last_start: Option<Instant> = None;
        while polls < max_polls {
            let started = Instant::now();
            if let Some(prev) = last_start {
                let c = started.duration_since(prev).as_secs_f64() * 1000.0;
                cycles += 1;
                cycle_sum += c;
                cycle_max = cycle_max.max(c);
            }
            last_start = Some(started);
            let fresh: Vec<_> = written
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .drain(..)
                .collect();
            for k in fresh {
                if let Some(Av::S(pk)) = k.get(PK) {
                    outstanding.insert(pk.clone(), k);
                }
            }
            if done.load(Ordering::Relaxed) {
                let at = *writes_done_at.get_or_insert_with(Instant::now);
                if outstanding.is_empty() || at.elapsed() > LAG_TAIL {
                    break;
                }
            }
            let keys: Vec<_> = outstanding.values().cloned().collect();
            for chunk in keys.chunks(GET_CHUNK) {
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .projection_expression("#p, written_ms")
                    .expression_attribute_names("#p", PK)
                    .build()?;
                let out = local
                    .ddb
                    .batch_get_item()
                    .request_items(target, ka)
                    .send()
                    .await
                    .map_err(sdk)
                    .context("BatchGetItem of the target")?;
                let seen = now_ms();
                for it in out
                    .responses()
                    .and_then(|r| r.get(target))
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let (Some(Av::S(pk)), Some(Av::N(w))) = (it.get(PK), it.get("written_ms"))
                    else {
                        continue;
                    };
                    if outstanding.remove(pk).is_some() {
                        lags.push(seen - w.parse::<i64>().context("written_ms")?);
                    }
                }
            }
            polls += 1;
            tokio::time::sleep_until((started + poll).into()).await;
        }
        lags.sort_unstable();
        Ok::<_, anyhow::Error>((lags, polls, cycle_sum / cycles.max(1) as f64, cycle_max))
    };

    let (w, p) = tokio::join!(writer, poller);
    let elapsed = w?;
    let (lags, polls, cycle_mean_ms, cycle_max_ms) = p?;
    Ok(Lag {
        rate,
        written: n as usize,
        achieved: n as f64 / elapsed.as_secs_f64(),
        lags,
        polls,
        cycle_mean_ms,
        cycle_max_ms,
    })
}
