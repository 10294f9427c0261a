//! The speed worker: consume `braid.readings`, fold, publish, seal.
//!
//! One tokio task owns everything: the consumer, the per-partition state (an
//! [`Engine`], which makes every decision) and the producer into
//! `braid.speed` and the dead-letter topic. Rebalances are
//! noted by the consumer context and carried out by the loop: a newly
//! assigned partition is restored from its newest valid checkpoint (and the
//! consumer sought to the checkpoint's offset), a revoked one is dropped
//! without writing anything, so that only the new owner writes from then on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::codec::decode_records;
use braid_core::detect::Alert;
use braid_core::speedlog::SpeedMessage;
use braid_kafka::{
    KafkaError, OrphanWatch, REJOIN_AFTER, RevocationContext, Topics, consumer_config,
    producer_config, rejoin_if_stalled,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use braid_core::merge::Cut;
use braid_store::views::{
    CurrentStamp, current_run, current_stamp, definition_hash, read_manifest,
};
use braid_store::{Backoff, Layout};

use crate::checkpoint::CheckpointError;
use crate::engine::{Engine, Offer};
use crate::judge::Judge;
use crate::{SpeedConfig, SpeedError};

/// Counters a worker reports (logs and status).
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    /// Records folded.
    pub records: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// State messages published.
    pub published: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Alerts published to `braid.alerts`.
    pub alerts: u64,
    /// States dropped because a published batch run covers their epoch.
    pub dropped_below_cut: u64,
}

pub(crate) struct Worker {
    config: SpeedConfig,
    consumer: Arc<StreamConsumer<RevocationContext>>,
    producer: FutureProducer,
    events: RevocationContext,
    engine: Engine,
    speed_partitions: i32,
    stats: WorkerStats,
    last_memory_warning: Option<Instant>,
    /// Control messages Kafka did not acknowledge, sent again first.
    unsent: Vec<SpeedMessage>,
    last_outage_warning: Option<Instant>,
    last_rebuild: Instant,
    /// The detectors, their states per (partition, device, metric) and
    /// the seasonal baselines; states are not checkpointed (a restarted
    /// worker learns again).
    judge: Judge,
    /// Alerts raised and not yet acknowledged by `braid.alerts`.
    alerts: Vec<Alert>,
    /// Per view (by index), the run id and cut of its published batch run
    /// made from this definition, and when `CURRENT` was last looked at.
    cuts: Vec<Option<(String, Cut)>>,
    /// Per view, the stamp of `CURRENT` when it was last read and acted on.
    cut_stamps: Vec<Option<Option<CurrentStamp>>>,
    cuts_checked: Option<Instant>,
    /// Partitions held by no one (see [`OrphanWatch`]).
    orphans: OrphanWatch,
    /// Cancelled on shutdown: a wait for the checkpoint store gives up.
    shutdown: CancellationToken,
    /// Where batch runs publish.
    layout: Layout,
}

/// How long a partition's committed offset may stay behind its records,
/// unheld by this worker, before the worker rejoins its group: three
/// checkpoint intervals (its owner commits after every seal), at least 30 s.
fn orphaned_after(checkpoint_interval: Duration) -> Duration {
    (checkpoint_interval * 3).max(Duration::from_secs(30))
}

/// Alerts held while `braid.alerts` does not acknowledge, at most.
const MAX_HELD_ALERTS: usize = 10_000;

impl Worker {
    pub(crate) async fn new(config: SpeedConfig) -> Result<Self, SpeedError> {
        let events = RevocationContext::default();
        let consumer: StreamConsumer<RevocationContext> =
            consumer_config(&config.brokers, &config.group)
                .create_with_context(events.clone())
                .map_err(|e| KafkaError::client("creating the speed consumer", e))?;
        consumer
            .subscribe(&[Topics::READINGS])
            .map_err(|e| KafkaError::client("subscribing to braid.readings", e))?;
        let producer: FutureProducer = producer_config(&config.brokers)
            .create()
            .map_err(|e| KafkaError::client("creating the speed producer", e))?;
        let speed_partitions = {
            let p = producer.clone();
            tokio::task::spawn_blocking(move || {
                use rdkafka::producer::Producer;
                p.client()
                    .fetch_metadata(Some(Topics::SPEED), Duration::from_secs(10))
                    .map(|m| {
                        m.topics()
                            .first()
                            .map_or(0, |t| t.partitions().len() as i32)
                    })
            })
            .await
            .map_err(|e| SpeedError::Internal(e.to_string()))?
            .map_err(|e| KafkaError::client("reading metadata of braid.speed", e))?
        };
        if speed_partitions == 0 {
            return Err(SpeedError::Internal(format!(
                "topic {} does not exist: create Braid's topics first (braid up and braid broker do)",
                Topics::SPEED
            )));
        }
        let orphans = OrphanWatch::new(orphaned_after(config.checkpoint_interval));
        let layout = Layout::new(&config.data_dir).publish_in(&config.published);
        Ok(Self {
            judge: Judge::new(config.detectors.clone()),
            cuts: vec![None; config.views.views.len()],
            cut_stamps: vec![None; config.views.views.len()],
            layout: layout.clone(),
            engine: Engine::new(config.views.clone(), layout, config.checkpoints.clone()),
            config,
            consumer: Arc::new(consumer),
            producer,
            events,
            speed_partitions,
            stats: WorkerStats::default(),
            cuts_checked: None,
            orphans,
            last_memory_warning: None,
            unsent: Vec::new(),
            last_outage_warning: None,
            last_rebuild: Instant::now(),
            alerts: Vec::new(),
            shutdown: CancellationToken::new(),
        })
    }

    pub(crate) async fn run(
        mut self,
        shutdown: CancellationToken,
    ) -> Result<WorkerStats, SpeedError> {
        self.shutdown = shutdown.clone();
        let mut publish = tokio::time::interval(self.config.publish_interval);
        let mut seal = tokio::time::interval(self.config.checkpoint_interval);
        seal.tick().await;
        let consumer = self.consumer.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = consumer.recv() => {
                    self.drain_events();
                    match msg {
                        Ok(m) => self.on_message(&m).await?,
                        Err(e) => tracing::warn!(error = %e, "consumer error; retrying"),
                    }
                }
                _ = publish.tick() => {
                    self.drain_events();
                    self.judge.reload(&self.layout);
                    self.drop_covered();
                    self.publish().await?;
                }
                _ = seal.tick() => {
                    self.drain_events();
                    self.publish().await?;
                    self.seal_all().await?;
                    let group = &self.config.group;
                    if !rejoin_if_stalled(&*self.consumer, group, Topics::READINGS, REJOIN_AFTER)? {
                        self.orphans.check(&*self.consumer, group, Topics::READINGS)?;
                    }
                }
            }
        }
        self.publish().await?;
        self.seal_all().await?;
        Ok(self.stats)
    }

    fn drain_events(&mut self) {
        for p in self.events.take_revoked() {
            self.judge.revoke(p);
            if self.engine.revoke(p) {
                tracing::info!(
                    partition = p,
                    "partition revoked: state dropped, its new owner restores it"
                );
            }
        }
    }

    /// Restores `p` from the checkpoint store, waiting while the store
    /// fails (nothing of `p` is folded before its restore).
    async fn restore(&mut self, p: i32) -> Result<(), SpeedError> {
        let mut backoff = Backoff::default();
        let restored = loop {
            let tried = self.engine.restore(p, |e| {
                tracing::warn!(partition = p, error = %e, "checkpoint refused; trying the previous one");
            });
            match tried.await {
                Ok(m) => break m,
                Err(e) => hold(&mut backoff, &self.shutdown, p, "restoring", e).await?,
            }
        };
        store_back(&mut backoff);
        self.send_control(restored).await
    }

    async fn on_message(&mut self, m: &BorrowedMessage<'_>) -> Result<(), SpeedError> {
        let p = m.partition();
        let offset = m.offset();
        if !self.engine.holds(p) {
            self.restore(p).await?;
        }
        match self.engine.offer(p, offset) {
            Offer::Skip => return Ok(()),
            Offer::Seek(expected) => {
                tracing::debug!(
                    partition = p,
                    offset,
                    expected,
                    "seeking to the checkpoint offset"
                );
                self.consumer
                    .seek(
                        Topics::READINGS,
                        p,
                        Offset::Offset(expected),
                        Duration::from_secs(5),
                    )
                    .map_err(|e| KafkaError::client("seeking braid.readings", e))?;
                return Ok(());
            }
            Offer::Take { seal_first: true } => self.seal(p, true).await?,
            Offer::Take { seal_first: false } => {}
        }
        let ingest_ts = m.timestamp().to_millis().unwrap_or_else(crate::now_ms);
        let payload = m.payload().unwrap_or_default();
        let (records, dead) = decode_records(payload, p, offset, ingest_ts);
        let judge = &mut self.judge;
        let alerts = &mut self.alerts;
        let judging = !judge.is_empty();
        // A duplicate is judged once, as the first copy.
        self.engine.fold(p, offset, &records, |reading| {
            if judging {
                judge.judge(p, reading, alerts);
            }
        });
        self.stats.records += records.len() as u64;
        if self.alerts.len() > MAX_HELD_ALERTS {
            let drop = self.alerts.len() - MAX_HELD_ALERTS;
            self.alerts.drain(..drop);
            tracing::warn!(
                dropped = drop,
                "braid.alerts is not acknowledging: the oldest alerts were dropped"
            );
        }
        for (index, reason) in dead {
            self.dead_letter(m, index, &reason).await?;
        }
        Ok(())
    }

    async fn dead_letter(
        &mut self,
        m: &BorrowedMessage<'_>,
        index: u32,
        reason: &str,
    ) -> Result<(), SpeedError> {
        let key = format!("{}:{}:{}", m.partition(), m.offset(), index);
        let headers = braid_kafka::topics::dead_letter_headers(reason, &key);
        let payload = m.payload().unwrap_or_default();
        self.producer
            .send(
                FutureRecord::to(Topics::READINGS_DLQ)
                    .key(&key)
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| KafkaError::client("writing to the dead-letter topic", e))?;
        self.stats.dead_lettered += 1;
        tracing::warn!(source = %key, reason, "record sent to the dead-letter topic");
        Ok(())
    }

    /// Sends a control message; one Kafka cannot acknowledge now is kept
    /// and sent again before the next states.
    async fn send_control(&mut self, msg: SpeedMessage) -> Result<(), SpeedError> {
        if !self.unsent.is_empty() {
            self.unsent.push(msg);
            return Ok(());
        }
        if let Err(e) = self.try_send_control(&msg).await {
            self.outage(&e);
            self.unsent.push(msg);
        }
        Ok(())
    }

    async fn try_send_control(&self, msg: &SpeedMessage) -> Result<(), KafkaError> {
        let partition = msg.partition() % self.speed_partitions;
        let payload = msg.to_bytes();
        let key = msg.partition().to_string();
        self.producer
            .send(
                FutureRecord::to(Topics::SPEED)
                    .partition(partition)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| KafkaError::client("publishing to braid.speed", e))?;
        Ok(())
    }

    /// Notes (at most once a minute in the log) that Kafka is not
    /// acknowledging: the worker keeps its states and tries again, with a
    /// fresh producer (a new idempotent session: a restarted broker may
    /// not know the old one) at most every few seconds.
    fn outage(&mut self, e: &KafkaError) {
        if self.last_rebuild.elapsed() >= Duration::from_secs(3) {
            self.last_rebuild = Instant::now();
            match producer_config(&self.config.brokers).create::<FutureProducer>() {
                Ok(fresh) => {
                    let old = std::mem::replace(&mut self.producer, fresh);
                    // Dropping purges and joins the old client: not on a
                    // runtime thread.
                    std::thread::spawn(move || drop(old));
                }
                Err(e) => tracing::warn!(error = %e, "rebuilding the speed producer failed"),
            }
        }
        if self
            .last_outage_warning
            .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_outage_warning = Some(Instant::now());
            tracing::warn!(error = %e, "braid.speed is not acknowledging: states kept, epochs left open, publishing again until it does");
        }
    }

    /// Publishes every changed state as an absolute value, then each
    /// partition's progress, and waits for the acknowledgements. Says
    /// whether all of it was acknowledged: what Kafka could not take (the
    /// broker down or slow) stays marked changed, for the next call.
    /// Sends the alerts raised since the last call to `braid.alerts`
    /// (JSON, keyed by device); those Kafka does not acknowledge stay for
    /// the next call.
    async fn publish_alerts(&mut self) {
        if self.alerts.is_empty() {
            return;
        }
        let alerts = std::mem::take(&mut self.alerts);
        let payloads: Vec<(String, Vec<u8>)> = alerts
            .iter()
            .map(|a| {
                (
                    a.device_id.clone(),
                    serde_json::to_vec(a).unwrap_or_default(),
                )
            })
            .collect();
        let pending: Vec<_> = payloads
            .iter()
            .map(|(key, payload)| {
                self.producer
                    .send_result(
                        FutureRecord::to(Topics::ALERTS)
                            .key(key.as_str())
                            .payload(payload.as_slice()),
                    )
                    .ok()
            })
            .collect();
        let mut kept = Vec::new();
        for (alert, sent) in alerts.into_iter().zip(pending) {
            let delivered = match sent {
                Some(d) => matches!(
                    tokio::time::timeout(Duration::from_secs(5), d).await,
                    Ok(Ok(Ok(_)))
                ),
                None => false,
            };
            if delivered {
                self.stats.alerts += 1;
            } else {
                kept.push(alert);
            }
        }
        if !kept.is_empty() {
            tracing::warn!(
                held = kept.len(),
                "braid.alerts did not acknowledge some alerts; sending them again later"
            );
            self.alerts = kept;
        }
    }

    async fn publish(&mut self) -> Result<bool, SpeedError> {
        self.publish_alerts().await;
        while let Some(msg) = self.unsent.first() {
            match self.try_send_control(msg).await {
                Ok(()) => {
                    self.unsent.remove(0);
                }
                Err(e) => {
                    self.outage(&e);
                    return Ok(false);
                }
            }
        }
        let pending = self.engine.take_changes();
        let mut deliveries = Vec::with_capacity(pending.len());
        let mut failed: Option<KafkaError> = None;
        let mut refused: Option<(usize, KafkaError)> = None;
        for (i, out) in pending.iter().enumerate() {
            let target = out.partition % self.speed_partitions;
            let key = match &out.msg {
                SpeedMessage::State { key, .. } => key.to_bytes(),
                other => other.partition().to_string().into_bytes(),
            };
            let payload = out.msg.to_bytes();
            loop {
                match self.producer.send_result(
                    FutureRecord::to(Topics::SPEED)
                        .partition(target)
                        .key(&key)
                        .payload(&payload),
                ) {
                    Ok(d) => {
                        deliveries.push((i, d));
                        break;
                    }
                    Err((e, _))
                        if matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ) =>
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        refused = Some((i, KafkaError::client("publishing to braid.speed", e)));
                        break;
                    }
                }
            }
            if refused.is_some() {
                break;
            }
        }
        let mut undelivered = Vec::new();
        if let Some((first, e)) = refused {
            undelivered.extend(first..pending.len());
            failed = Some(e);
        }
        for (i, d) in deliveries {
            match d.await {
                Ok(Ok(_)) => self.stats.published += 1,
                Ok(Err((e, _))) => {
                    undelivered.push(i);
                    failed = Some(KafkaError::client("publishing to braid.speed", e));
                }
                Err(_) => return Err(SpeedError::Internal("a delivery was cancelled".into())),
            }
        }
        if let Some(e) = failed {
            // Absolute values: sending a state again later is harmless.
            for i in undelivered {
                self.engine.unsent(&pending[i]);
            }
            self.outage(&e);
            return Ok(false);
        }
        let total_states = self.engine.state_count();
        if total_states > self.config.max_states
            && self
                .last_memory_warning
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_memory_warning = Some(Instant::now());
            tracing::warn!(
                states = total_states,
                limit = self.config.max_states,
                "speed states over the configured limit: run a batch (braid batch run) so that older epochs can be dropped"
            );
        }
        Ok(true)
    }

    /// Drops the states of epochs below the cut of their view's published
    /// batch run (looking at `CURRENT` at most every 5 s): the run counts
    /// them now, serving drops its copies at the same cut, and they never
    /// change again (readings fold into the open epoch only, and a cut is
    /// a sealed boundary, so an epoch below it is sealed). A state not yet
    /// published is kept until it is.
    fn drop_covered(&mut self) {
        if self
            .cuts_checked
            .is_some_and(|t| t.elapsed() < crate::judge::RELOAD_EVERY)
        {
            return;
        }
        self.cuts_checked = Some(Instant::now());
        let layout = &self.layout;
        let views = self.engine.views();
        for (vi, v) in views.views.iter().enumerate() {
            // Read only when it moved (an object store is not waited for).
            let Ok(stamp) = current_stamp(layout, &v.name) else {
                continue;
            };
            if self.cut_stamps[vi].as_ref() == Some(&stamp) {
                continue;
            }
            let Ok(Some(run)) = current_run(layout, &v.name) else {
                continue;
            };
            if self.cuts[vi].as_ref().is_some_and(|c| c.0 == run) {
                self.cut_stamps[vi] = Some(stamp);
                continue;
            }
            match read_manifest(layout, &v.name, &run) {
                Ok(m) if m.definition_hash == definition_hash(v, views) => {
                    self.cuts[vi] = Some((run, m.cut));
                    self.cut_stamps[vi] = Some(stamp);
                }
                Ok(_) => self.cut_stamps[vi] = Some(stamp),
                Err(e) => {
                    tracing::warn!(view = %v.name, error = %e, "cannot read the published batch run")
                }
            }
        }
        let cuts: Vec<Option<&Cut>> = self
            .cuts
            .iter()
            .map(|c| c.as_ref().map(|(_, cut)| cut))
            .collect();
        let dropped = self.engine.drop_below(&cuts);
        if dropped > 0 {
            self.stats.dropped_below_cut += dropped as u64;
            tracing::info!(
                dropped,
                "speed states of epochs a published batch run covers dropped"
            );
        }
    }

    async fn seal_all(&mut self) -> Result<(), SpeedError> {
        for p in self.engine.advanced() {
            self.seal(p, false).await?;
        }
        Ok(())
    }

    /// Seals the open epoch of `p`: checkpoint, boundary registry, the
    /// `Sealed` message, then the consumer position as a hint. While Kafka
    /// is not acknowledging, a periodic seal is skipped (the epoch stays
    /// open, so no sealed epoch lacks its published states); a `forced`
    /// one (at a published batch cut, which an epoch must not straddle)
    /// waits for Kafka.
    async fn seal(&mut self, p: i32, forced: bool) -> Result<(), SpeedError> {
        while !self.publish().await? {
            if !forced {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let Some(job) = self.engine.seal(p) else {
            return Ok(());
        };
        // The epoch is sealed in memory: its checkpoint must land before
        // anything more is folded, published or committed (a put that
        // failed may have landed all the same), so a failing store holds
        // the worker here and the same checkpoint is written again.
        let mut backoff = Backoff::default();
        let key = loop {
            match job.write(self.engine.store()).await {
                Ok(key) => break key,
                Err(e) => hold(&mut backoff, &self.shutdown, p, "writing a checkpoint", e).await?,
            }
        };
        store_back(&mut backoff);
        self.stats.checkpoints += 1;
        tracing::debug!(partition = p, key, "epoch sealed");
        let next = job.next_offset;
        self.send_control(job.msg).await?;
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(Topics::READINGS, p, Offset::Offset(next))
            .is_ok()
        {
            let _ = self.consumer.commit(&tpl, CommitMode::Async);
        }
        Ok(())
    }
}

/// Waits out a failed try at the checkpoint store, saying so; on shutdown
/// the failure ends the worker instead (what was not checkpointed is
/// folded again by the next owner).
async fn hold(
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
    p: i32,
    what: &str,
    e: CheckpointError,
) -> Result<(), SpeedError> {
    if shutdown.is_cancelled() {
        return Err(e.into());
    }
    let pause = backoff.failed();
    tracing::warn!(partition = p, error = %e, retry_in = ?pause, "checkpoint store failed {what}: holding, nothing more is folded until it works");
    tokio::select! {
        _ = tokio::time::sleep(pause) => Ok(()),
        _ = shutdown.cancelled() => Err(e.into()),
    }
}

/// Says that the checkpoint store works again, when it had failed.
fn store_back(backoff: &mut Backoff) {
    if backoff.worked() {
        tracing::info!("checkpoint store works again: folding resumes");
    }
}
