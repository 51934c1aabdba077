//! The warm pool: idle instances of protocol 2 workers ([`crate::envelope::warm`]), started by
//! one pool thread, claimed by dispatches.
//!
//! - **Keys.** A worker's pool holds instances for one key ([`warm_key`]: verified package
//!   digest and store path, declared envelope, limits, minimums, runtime, identity). The key is
//!   learnt from the worker's dispatches: the first one after a start, a reload or a change
//!   runs cold, and it is the template the pool starts instances from. A dispatch with another
//!   key (a new package, another profile) replaces the pool; old instances are stopped unused.
//! - **Claims.** A claim takes an instance out of the pool for good, after checking it is
//!   unchanged ([`WarmInstance::usable`]), preferring a *settled* one: an instance that used no
//!   CPU between the pool thread's last two looks has finished loading and is blocked on its
//!   request (an interpreter still importing would make the request wait). Settled is a hint
//!   from measurement, not a promise: a starved instance can look settled. An empty pool is a
//!   cold run at once: a dispatch never waits for an instance.
//! - **Refills** run on the pool thread, one instance at a time, and only while fewer runs are
//!   in flight than the host has CPUs: refilling never competes with a busy Hall. The thread
//!   lives as long as the Hall (init's parent-death signal follows the cloning thread).
//! - **Bounds.** At most `per_worker` idle instances per worker and `max_instances` in all;
//!   idle memory stays within `memory_budget_bytes`: each instance is measured when it is ready
//!   and again on every turn of the pool thread (at least once a second; an interpreter grows
//!   as it loads its modules), and the newest instances are stopped while the total is over.
//!   Instances idle for `max_idle_seconds` are replaced.
//! - **Invalidation.** A reload (which is also how keys and packages are rotated) empties
//!   every pool; a failed verification empties that worker's pool; a package change changes
//!   the key.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::WarmSection;
use crate::envelope::warm::{Usage, WarmInstance, WarmStartError, warm_key};
use crate::envelope::{self, Envelope};

/// How long a worker gets no new instance after one of its instances changed while it waited
/// (exited, or wrote to stdout).
const CHANGED_BACKOFF: Duration = Duration::from_secs(10);

/// Counters for `/metrics` (counts since start).
#[derive(Debug, Default)]
pub struct WarmStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub discards: AtomicU64,
    pub start_failures: AtomicU64,
}

/// What a dispatch got from the pool.
pub enum Claim {
    /// An instance, ready for its request.
    Warm(Box<WarmInstance>),
    /// Run cold, for this reason (`empty`, `not_configured`, or
    /// [`crate::envelope::warm::Ineligible::as_str`]).
    Cold(&'static str),
}

/// An idle instance and what the pool measured of it.
struct Idle {
    instance: WarmInstance,
    /// Its memory at the last look, in bytes.
    memory: u64,
    /// Its CPU time at the last look, in ms (none where the host cannot measure it).
    cpu_ms: Option<u64>,
    /// It used no CPU between the last two looks: loaded, and blocked on its request.
    settled: bool,
}

impl Idle {
    fn new(instance: WarmInstance, usage: Usage) -> Idle {
        Idle {
            instance,
            memory: usage.memory_bytes.unwrap_or(0),
            cpu_ms: usage.cpu_ms,
            settled: false,
        }
    }
}

/// How often the pool thread looks at instances that have not settled yet.
const SETTLE_LOOK: Duration = Duration::from_millis(100);

struct WorkerPool {
    key: String,
    /// The first dispatch's request with its payload and context removed.
    template: envelope::RunRequest,
    idle: VecDeque<Idle>,
    starting: usize,
    /// After a failed start, no new start before this.
    retry_at: Option<Instant>,
}

struct Inner {
    config: WarmSection,
    /// Set at shutdown: nothing is started or kept any more.
    closed: bool,
    pools: BTreeMap<String, WorkerPool>,
    /// Bumped whenever pools are emptied: an instance started before is not kept.
    generation: u64,
    memory: u64,
}

/// The Hall's warm pool.
pub struct WarmPool {
    inner: Mutex<Inner>,
    wake: Condvar,
    envelope: Arc<Envelope>,
    in_flight: AtomicUsize,
    /// Starts the pool thread has under way (0 or 1).
    starting: AtomicUsize,
    cpus: usize,
    pub stats: WarmStats,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool").finish_non_exhaustive()
    }
}

/// Counts a run in flight while it lives (the pool thread refills only below the CPU count).
pub struct InFlight<'a>(&'a WarmPool);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.wake.notify_one();
    }
}

impl WarmPool {
    /// A pool (and its thread) for `config`; the thread starts nothing until a configured
    /// worker's dispatch teaches it a key.
    pub fn start(envelope: Arc<Envelope>, config: WarmSection) -> std::io::Result<Arc<WarmPool>> {
        let pool = Arc::new(WarmPool {
            inner: Mutex::new(Inner {
                config,
                closed: false,
                pools: BTreeMap::new(),
                generation: 0,
                memory: 0,
            }),
            wake: Condvar::new(),
            envelope,
            in_flight: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stats: WarmStats::default(),
        });
        let weak = Arc::downgrade(&pool);
        std::thread::Builder::new()
            .name("wcp-warm-pool".into())
            .spawn(move || refill_loop(weak))?;
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a run in flight until the guard is dropped.
    pub fn running(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// An instance for `species`'s request, or why it runs cold. Never waits for a start.
    pub fn claim(&self, species: &str, req: &envelope::RunRequest) -> Claim {
        let mut stopped = Vec::new();
        let claim = self.claim_locked(species, req, &mut stopped);
        // Stopping an instance kills and reaps it: outside the lock.
        self.stats
            .discards
            .fetch_add(stopped.len() as u64, Ordering::Relaxed);
        drop(stopped);
        match &claim {
            Claim::Warm(_) => self.stats.hits.fetch_add(1, Ordering::Relaxed),
            Claim::Cold(_) => self.stats.misses.fetch_add(1, Ordering::Relaxed),
        };
        claim
    }

    fn claim_locked(
        &self,
        species: &str,
        req: &envelope::RunRequest,
        stopped: &mut Vec<WarmInstance>,
    ) -> Claim {
        let mut inner = self.lock();
        if inner.closed || !inner.config.workers.iter().any(|w| w == species) {
            return Claim::Cold("not_configured");
        }
        let inner = &mut *inner;
        let key = match warm_key(req) {
            Ok(k) => k,
            Err(why) => {
                // The worker's package no longer runs warm (re-signed as protocol 1, or it now
                // declares secrets): what waits for it was started for another package.
                if let Some(pool) = inner.pools.remove(species) {
                    for e in pool.idle {
                        inner.memory = inner.memory.saturating_sub(e.memory);
                        stopped.push(e.instance);
                    }
                }
                return Claim::Cold(why.as_str());
            }
        };
        let pool = inner
            .pools
            .entry(species.to_owned())
            .or_insert_with(|| WorkerPool {
                key: key.clone(),
                template: template(req),
                idle: VecDeque::new(),
                starting: 0,
                retry_at: None,
            });
        if pool.key != key {
            // Another package or plan: what is idle was started for the old one.
            for e in pool.idle.drain(..) {
                inner.memory = inner.memory.saturating_sub(e.memory);
                stopped.push(e.instance);
            }
            pool.key = key;
            pool.template = template(req);
            pool.retry_at = None;
        }
        // A settled instance first (it answers without finishing its start-up first).
        if let Some(at) = pool.idle.iter().position(|e| e.settled)
            && let Some(e) = pool.idle.remove(at)
        {
            pool.idle.push_front(e);
        }
        let mut found = None;
        while let Some(e) = pool.idle.pop_front() {
            inner.memory = inner.memory.saturating_sub(e.memory);
            if e.instance.usable() {
                found = Some(e.instance);
                break;
            }
            pool.retry_at = Some(Instant::now() + CHANGED_BACKOFF);
            stopped.push(e.instance);
        }
        self.wake.notify_one();
        match found {
            Some(i) => Claim::Warm(Box::new(i)),
            None => Claim::Cold("empty"),
        }
    }

    /// Stops every idle instance of `species` (its package failed verification).
    pub fn discard_worker(&self, species: &str) {
        let stopped: Vec<WarmInstance> = {
            let mut inner = self.lock();
            let Some(pool) = inner.pools.remove(species) else {
                return;
            };
            let mem: u64 = pool.idle.iter().map(|e| e.memory).sum();
            inner.memory = inner.memory.saturating_sub(mem);
            pool.idle.into_iter().map(|e| e.instance).collect()
        };
        self.stats
            .discards
            .fetch_add(stopped.len() as u64, Ordering::Relaxed);
    }

    /// Empties every pool and takes the (reloaded) configuration: nothing started before a
    /// reload serves a request after it.
    pub fn reconfigure(&self, config: WarmSection) {
        let stopped: Vec<WarmInstance> = {
            let mut inner = self.lock();
            inner.config = config;
            inner.generation += 1;
            inner.memory = 0;
            std::mem::take(&mut inner.pools)
                .into_values()
                .flat_map(|p| p.idle.into_iter().map(|e| e.instance))
                .collect()
        };
        self.stats
            .discards
            .fetch_add(stopped.len() as u64, Ordering::Relaxed);
        drop(stopped);
        self.wake.notify_one();
    }

    /// Stops every idle instance and starts no more (the Hall is stopping).
    pub fn shutdown(&self) {
        self.lock().closed = true;
        self.reconfigure(WarmSection::default());
        // A start under way ends in `place`, which stops it now; wait for that (bounded), so
        // its run directory does not outlive the Hall.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.starting.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the pool holds now.
    pub fn sizes(&self) -> PoolSizes {
        let inner = self.lock();
        let idle = inner.pools.values().flat_map(|p| p.idle.iter());
        PoolSizes {
            idle: inner.pools.values().map(|p| p.idle.len()).sum(),
            settled: idle.filter(|e| e.settled).count(),
            starting: inner.pools.values().map(|p| p.starting).sum(),
            memory_bytes: inner.memory,
        }
    }
}

/// What the pool holds (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSizes {
    /// Idle instances.
    pub idle: usize,
    /// Idle instances that have settled (see the module's "Claims").
    pub settled: usize,
    /// Instances being started.
    pub starting: usize,
    /// The memory idle instances hold, in bytes.
    pub memory_bytes: u64,
}

/// A request with nothing of the dispatch in it: what instances are started from.
fn template(req: &envelope::RunRequest) -> envelope::RunRequest {
    let mut t = req.clone();
    t.payload = Vec::new();
    t.correlation_id = "warm-start".into();
    t.traceparent = None;
    t
}

/// What the pool thread does next.
enum Next {
    Start {
        species: String,
        template: Box<envelope::RunRequest>,
        generation: u64,
        timeout: Duration,
    },
    Wait(Duration),
}

fn refill_loop(pool: std::sync::Weak<WarmPool>) {
    loop {
        let Some(p) = pool.upgrade() else {
            return;
        };
        match p.next_step() {
            Next::Wait(d) => {
                let inner = p.lock();
                let _ = p.wake.wait_timeout(inner, d);
            }
            Next::Start {
                species,
                template,
                generation,
                timeout,
            } => {
                let started = p.envelope.start_warm(&template, timeout);
                p.place(&species, generation, started);
                p.starting.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

impl WarmPool {
    /// Chooses the next start (or how long to sleep), stopping expired instances on the way.
    fn next_step(&self) -> Next {
        let mut expired = Vec::new();
        let next = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            let max_idle = Duration::from_secs(inner.config.max_idle_seconds);
            for pool in inner.pools.values_mut() {
                while pool
                    .idle
                    .front()
                    .is_some_and(|e| e.instance.age() >= max_idle)
                {
                    if let Some(e) = pool.idle.pop_front() {
                        inner.memory = inner.memory.saturating_sub(e.memory);
                        expired.push(e.instance);
                    }
                }
            }
            // Threat: a package that works while nobody asked it to (spins, or exits and is
            // restarted) would burn the host's CPU with no request at all. An instance that
            // changed (exited, wrote to stdout) or used more CPU than its start-up allows is
            // stopped; for the CPU, its worker gets no new instance for a minute.
            let start_cpu_ms = inner.config.start_cpu_ms;
            for (species, pool) in inner.pools.iter_mut() {
                let mut kept = VecDeque::with_capacity(pool.idle.len());
                for mut e in pool.idle.drain(..) {
                    // One look: CPU (settled? spinning?) and memory (an interpreter grows as it
                    // loads its modules; the budget is checked below).
                    let usage = e.instance.usage();
                    e.settled = usage.cpu_ms.is_some() && usage.cpu_ms == e.cpu_ms;
                    e.cpu_ms = usage.cpu_ms;
                    e.memory = usage.memory_bytes.unwrap_or(e.memory);
                    if usage.cpu_ms.is_some_and(|ms| ms > start_cpu_ms) {
                        tracing::warn!(
                            worker_species_id = %species,
                            "a warm instance used more than [warm] start_cpu_ms = {start_cpu_ms} \
                             of CPU before its request: stopped; no new instance for 60 s"
                        );
                        pool.retry_at = Some(Instant::now() + Duration::from_secs(60));
                        expired.push(e.instance);
                    } else if !e.instance.usable() {
                        // A package whose instances die or write while they wait would otherwise
                        // be restarted back to back: rest first.
                        pool.retry_at = Some(Instant::now() + CHANGED_BACKOFF);
                        expired.push(e.instance);
                    } else {
                        kept.push_back(e);
                    }
                }
                pool.idle = kept;
            }
            // Stop the newest instances while the total just measured is over the budget.
            inner.memory = inner
                .pools
                .values()
                .flat_map(|p| p.idle.iter())
                .map(|e| e.memory)
                .fold(0u64, u64::saturating_add);
            while inner.memory > inner.config.memory_budget_bytes {
                let Some(pool) = inner.pools.values_mut().max_by_key(|p| p.idle.len()) else {
                    break;
                };
                let Some(e) = pool.idle.pop_back() else {
                    break;
                };
                inner.memory = inner.memory.saturating_sub(e.memory);
                // Wait for a claim before starting another for this worker.
                pool.retry_at = Some(Instant::now() + Duration::from_secs(1));
                expired.push(e.instance);
            }
            let total: usize = inner
                .pools
                .values()
                .map(|p| p.idle.len() + p.starting)
                .sum();
            let now = Instant::now();
            // Instances still loading are looked at often, so a settled one is known soon.
            let look = if inner
                .pools
                .values()
                .any(|p| p.idle.iter().any(|e| !e.settled))
            {
                SETTLE_LOOK
            } else {
                Duration::from_secs(1)
            };
            let busy = inner.closed || self.in_flight.load(Ordering::Relaxed) >= self.cpus;
            let want = inner.pools.iter_mut().find(|(species, p)| {
                inner.config.workers.iter().any(|w| w == *species)
                    && p.idle.len() + p.starting < inner.config.per_worker
                    && p.retry_at.is_none_or(|t| now >= t)
            });
            match want {
                Some((species, p))
                    if !busy
                        && total < inner.config.max_instances
                        && inner.memory < inner.config.memory_budget_bytes =>
                {
                    p.starting += 1;
                    self.starting.fetch_add(1, Ordering::Acquire);
                    Next::Start {
                        species: species.clone(),
                        template: Box::new(p.template.clone()),
                        generation: inner.generation,
                        timeout: Duration::from_millis(inner.config.start_timeout_ms),
                    }
                }
                // Busy: look again when a run ends (or soon).
                Some(_) => Next::Wait(if busy {
                    Duration::from_millis(50)
                } else {
                    look
                }),
                None => Next::Wait(look),
            }
        };
        self.stats
            .discards
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        next
    }

    /// Puts a started instance in its pool, or stops it (the pool changed meanwhile, or it
    /// would go over the memory budget).
    fn place(&self, species: &str, generation: u64, started: Result<WarmInstance, WarmStartError>) {
        let usage = started
            .as_ref()
            .map(WarmInstance::usage)
            .unwrap_or_default();
        let memory = usage.memory_bytes.unwrap_or(0);
        // Declared before the lock so that an instance stopped here is stopped after it.
        let stop: Option<WarmInstance>;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let current = inner.generation == generation && !inner.closed;
        let budget = inner.config.memory_budget_bytes;
        let used = inner.memory;
        let Some(pool) = inner.pools.get_mut(species) else {
            return;
        };
        if current {
            pool.starting = pool.starting.saturating_sub(1);
        }
        let instance = match started {
            Ok(i) => i,
            Err(e) => {
                self.stats.start_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(worker_species_id = %species, "a warm instance did not start: {e}");
                if current {
                    pool.retry_at = Some(Instant::now() + Duration::from_secs(5));
                }
                return;
            }
        };
        if !current || instance.key() != pool.key || used.saturating_add(memory) > budget {
            self.stats.discards.fetch_add(1, Ordering::Relaxed);
            if current && used.saturating_add(memory) > budget {
                // The budget is full: wait for a claim before trying again.
                pool.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            stop = Some(instance);
        } else {
            inner.memory += memory;
            pool.idle.push_back(Idle::new(instance, usage));
            stop = None;
        }
        let _ = &stop;
        // The guard is released before `stop` (declared first, dropped last) stops anything.
    }
}
