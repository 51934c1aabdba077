//! OpenTelemetry traces of dispatches, exported over OTLP/HTTP (protobuf).
//!
//! Off unless an endpoint is configured (`[tracing] endpoint`, else
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`).
//! One `wcp.dispatch` span per `POST /wcp/dispatch`, a child of the caller's W3C
//! `traceparent` when it sent one, with child spans for each step (`wcp.admission`,
//! `wcp.route`, `wcp.verify`, `wcp.intent_receipt`, `wcp.envelope_run`,
//! `wcp.outcome_receipt`, `wcp.denial_receipt`). The worker's `TRACEPARENT` names the
//! `wcp.envelope_run` span. An approved request's run is a `wcp.approval.complete` span in the
//! trace of the dispatch that asked. With tracing off, a caller's valid context passes through
//! unrecorded (see [`Trace`]). Receipts record [`Trace::ids`]; the request's log span carries
//! the trace id.
//!
//! The spans are built with the OpenTelemetry API directly rather than bridged from `tracing`:
//! the Hall's `tracing` events are its log (journald), the dispatch spans need the caller's
//! remote parent, exact WCP attribute names and their own sampling, none of which should depend
//! on the log filter.
//!
//! Export never blocks or fails a dispatch: an ended span goes into a bounded queue
//! ([`QueueProcessor`]) with a non-blocking send; one thread of its own batches and exports;
//! a full queue drops the span and counts it, a failed export counts its spans.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant, SystemTime};

pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{Span as _, SpanContext, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};

use crate::config::TracingSection;
use crate::receipt::model::TraceRef;

/// The traces setup, resolved from `[tracing]` and the `OTEL_*` variables (pure).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The OTLP/HTTP traces URL.
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub sampler: SamplerChoice,
    pub service_name: String,
    pub max_queue: usize,
}

/// Which sampler (`OTEL_TRACES_SAMPLER` names).
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedOn,
    ParentBasedOff,
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    fn sampler(&self) -> Sampler {
        let parent = |s| Sampler::ParentBased(Box::new(s));
        match *self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerChoice::ParentBasedOn => parent(Sampler::AlwaysOn),
            SamplerChoice::ParentBasedOff => parent(Sampler::AlwaysOff),
            SamplerChoice::ParentBasedRatio(r) => parent(Sampler::TraceIdRatioBased(r)),
        }
    }
}

impl Settings {
    /// `[tracing]` first, then the standard variables (`env` looks one up); `Ok(None)`: off.
    pub fn resolve(
        section: &TracingSection,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, String> {
        let var = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            && section.endpoint.is_none()
        {
            return Ok(None);
        }
        let endpoint = match section.endpoint.clone() {
            Some(e) => e,
            None => match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(e) => e,
                None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
                    None => return Ok(None),
                },
            },
        };
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "the OTLP traces endpoint {endpoint:?} is not an http:// URL\nhint: the Hall \
                 exports without TLS; send to a local OpenTelemetry Collector"
            ));
        }
        let mut headers = BTreeMap::new();
        for k in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(v) = var(k) {
                headers.extend(parse_headers(&v).map_err(|e| format!("{k}: {e}"))?);
            }
        }
        headers.extend(section.headers.clone());
        let sampler = match section.sampling_ratio {
            Some(r) => SamplerChoice::ParentBasedRatio(r),
            None => sampler_from_env(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?,
        };
        let service_name = section
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "wcp-hall".into());
        Ok(Some(Settings {
            endpoint,
            headers,
            sampler,
            service_name,
            max_queue: section.max_queue.unwrap_or(2048),
        }))
    }
}

/// `k1=v1,k2=v2` (W3C baggage-like; values percent-decoded).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let v: String =
                form_urlencoded::parse(format!("v={}", v.trim().replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
            Ok((k.trim().to_owned(), v))
        })
        .collect()
}

fn sampler_from_env(name: Option<String>, arg: Option<String>) -> Result<SamplerChoice, String> {
    let ratio = || -> Result<f64, String> {
        match &arg {
            None => Ok(1.0),
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG {a:?} is not a ratio 0.0–1.0")),
        }
    };
    Ok(match name.as_deref() {
        None | Some("parentbased_always_on") => SamplerChoice::ParentBasedOn,
        Some("always_on") => SamplerChoice::AlwaysOn,
        Some("always_off") => SamplerChoice::AlwaysOff,
        Some("traceidratio") => SamplerChoice::Ratio(ratio()?),
        Some("parentbased_always_off") => SamplerChoice::ParentBasedOff,
        Some("parentbased_traceidratio") => SamplerChoice::ParentBasedRatio(ratio()?),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER {other:?} is not one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            ));
        }
    })
}

/// Export counts, for the metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

/// The running exporter: the tracer the Hall's spans come from.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    pub stats: Arc<ExportStats>,
    pub endpoint: String,
}

impl Tracing {
    /// Builds the exporter and its thread (no connection is made until the first export).
    pub fn start(settings: &Settings) -> Result<Tracing, String> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_headers(settings.headers.clone().into_iter().collect())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("the OTLP exporter could not be built: {e}"))?;
        let stats = Arc::new(ExportStats::default());
        let processor = QueueProcessor::start(exporter, settings.max_queue, stats.clone())?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(settings.sampler.sampler())
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(settings.service_name.clone())
                    .with_attribute(KeyValue::new(
                        "service.version",
                        crate::hall::metrics::VERSION,
                    ))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("wcp-hall");
        Ok(Tracing {
            provider,
            tracer,
            stats,
            endpoint: settings.endpoint.clone(),
        })
    }

    /// Exports what is queued and stops the export thread (waits at most `timeout`).
    pub fn shutdown(&self, timeout: Duration) {
        let _ = self.provider.shutdown_with_timeout(timeout);
    }
}

/// The W3C trace context a request came with (`traceparent`, `tracestate` headers).
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl opentelemetry::propagation::Extractor for Incoming {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// A handle on a span to hang children on (cheap to clone).
///
/// With tracing on it is one of the Hall's own, recorded spans. With tracing off it carries the
/// caller's span context unchanged, when the caller sent a valid `traceparent`: nothing is
/// recorded or exported, but the worker's `TRACEPARENT`, the receipts and the log lines still
/// name the caller's trace (a pass-through, as an uninstrumented hop in W3C Trace Context).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The tracer and the Hall's own span (`None`: tracing is off).
    recording: Option<(SdkTracer, Context)>,
    /// The caller's span context, passed through when tracing is off.
    remote: Option<SpanContext>,
}

/// The dispatch span: ended when dropped.
#[derive(Debug, Default)]
pub struct DispatchSpan(Trace);

/// A child span started now and ended with [`Child::end`] (or when dropped).
#[derive(Debug, Default)]
pub struct Child(Trace);

/// The caller's span context from `incoming`, when it is a valid W3C trace context.
fn extract(incoming: &Incoming) -> Option<SpanContext> {
    use opentelemetry::propagation::TextMapPropagator as _;
    let parent = TraceContextPropagator::new().extract(incoming);
    let sc = parent.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

impl DispatchSpan {
    /// Starts `wcp.dispatch`, a child of the caller's context when it sent a valid one.
    pub fn start(tracing: Option<&Tracing>, incoming: &Incoming, attrs: Vec<KeyValue>) -> Self {
        Self::start_named("wcp.dispatch", SpanKind::Server, tracing, incoming, attrs)
    }

    /// Starts a root span of the Hall's named `name` (e.g. `wcp.approval.complete`, the run of
    /// an approved request, in the trace of the dispatch that asked for the approval).
    pub fn start_named(
        name: &'static str,
        kind: SpanKind,
        tracing: Option<&Tracing>,
        incoming: &Incoming,
        attrs: Vec<KeyValue>,
    ) -> Self {
        let Some(t) = tracing else {
            return DispatchSpan(Trace {
                recording: None,
                remote: extract(incoming),
            });
        };
        use opentelemetry::propagation::TextMapPropagator as _;
        let parent = TraceContextPropagator::new().extract(incoming);
        let span = t
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs)
            .start_with_context(&t.tracer, &parent);
        DispatchSpan(Trace {
            recording: Some((t.tracer.clone(), parent.with_span(span))),
            remote: None,
        })
    }

    pub fn trace(&self) -> Trace {
        self.0.clone()
    }
}

impl Drop for DispatchSpan {
    fn drop(&mut self) {
        if let Some((_, cx)) = &self.0.recording {
            cx.span().end();
        }
    }
}

impl Trace {
    /// Adds attributes to this span.
    pub fn set(&self, attrs: Vec<KeyValue>) {
        if let Some((_, cx)) = &self.recording {
            cx.span().set_attributes(attrs);
        }
    }

    /// Marks this span failed with `code`.
    pub fn error(&self, code: &str) {
        if let Some((_, cx)) = &self.recording {
            cx.span()
                .set_attribute(KeyValue::new("wcp.error_code", code.to_owned()));
            cx.span().set_status(Status::error(code.to_owned()));
        }
    }

    /// Records a finished step as a child span, from `start` (wall clock) to now.
    pub fn step(&self, name: &'static str, start: SystemTime, attrs: Vec<KeyValue>) {
        if let Some((tracer, cx)) = &self.recording {
            let mut span = tracer
                .span_builder(name)
                .with_start_time(start)
                .with_attributes(attrs)
                .start_with_context(tracer, cx);
            span.end();
        }
    }

    /// Starts a child span now (a pass-through trace stays one).
    pub fn child(&self, name: &'static str) -> Child {
        match &self.recording {
            Some((tracer, cx)) => {
                let span = tracer.span_builder(name).start_with_context(tracer, cx);
                Child(Trace {
                    recording: Some((tracer.clone(), cx.with_span(span))),
                    remote: None,
                })
            }
            None => Child(self.clone()),
        }
    }

    /// The span context this handle names: the Hall's span, else the caller's.
    fn span_context(&self) -> Option<SpanContext> {
        let sc = match &self.recording {
            Some((_, cx)) => cx.span().span_context().clone(),
            None => self.remote.clone()?,
        };
        sc.is_valid().then_some(sc)
    }

    /// This span as a W3C `traceparent` (none without a trace).
    pub fn traceparent(&self) -> Option<String> {
        let sc = self.span_context()?;
        Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ))
    }

    /// This span's trace and span ids, as receipts record them (none without a trace).
    pub fn ids(&self) -> Option<TraceRef> {
        let sc = self.span_context()?;
        Some(TraceRef {
            trace_id: sc.trace_id().to_string(),
            span_id: sc.span_id().to_string(),
        })
    }

    /// Whether the Hall records this span (tracing is on).
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }
}

impl Child {
    pub fn trace(&self) -> &Trace {
        &self.0
    }

    /// Adds an event (now) to this span.
    pub fn event(&self, name: &'static str, attrs: Vec<KeyValue>) {
        if let Some((_, cx)) = &self.0.recording {
            cx.span().add_event(name, attrs);
        }
    }

    /// Ends the span with these attributes.
    pub fn end(self, attrs: Vec<KeyValue>) {
        self.0.set(attrs);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some((_, cx)) = &self.0.recording {
            cx.span().end();
        }
    }
}

/// Wall-clock start of a step, for [`Trace::step`].
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// A `KeyValue` shorthand.
pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

enum Message {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
}

/// A span processor with a bounded queue and one export thread: `on_end` never waits.
///
/// The export thread sleeps until its deadline (or until a batch is full, a flush is asked)
/// and then drains the queue: a span is handed over without waking it, so tracing costs no
/// context switch per span on the dispatch path.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: SyncSender<Message>,
    /// Spans queued and not yet taken by the export thread.
    pending: Arc<AtomicUsize>,
    /// The export thread, woken when a batch is full or a flush is asked.
    waker: std::thread::Thread,
    stats: Arc<ExportStats>,
    resource: std::sync::Mutex<Option<SyncSender<Resource>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

const BATCH: usize = 512;
const DELAY: Duration = Duration::from_secs(1);

impl QueueProcessor {
    fn start<E: SpanExporter + 'static>(
        exporter: E,
        max_queue: usize,
        stats: Arc<ExportStats>,
    ) -> Result<Self, String> {
        let (queue, rx) = std::sync::mpsc::sync_channel(max_queue);
        let (resource_tx, resource_rx) = std::sync::mpsc::sync_channel(1);
        let s = stats.clone();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("wcp-otlp-export".into())
            .spawn(move || export_loop(exporter, rx, resource_rx, &p, &s))
            .map_err(|e| format!("the OTLP export thread could not start: {e}"))?;
        Ok(QueueProcessor {
            queue,
            pending,
            waker: thread.thread().clone(),
            stats,
            resource: std::sync::Mutex::new(Some(resource_tx)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }
}

fn export_loop<E: SpanExporter>(
    mut exporter: E,
    rx: Receiver<Message>,
    resource: Receiver<Resource>,
    pending: &AtomicUsize,
    stats: &ExportStats,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut deadline = Instant::now() + DELAY;
    let export = |exporter: &mut E, batch: &mut Vec<SpanData>| {
        if let Ok(r) = resource.try_recv() {
            exporter.set_resource(&r);
        }
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match futures_executor::block_on(exporter.export(std::mem::take(batch))) {
            Ok(()) => stats.exported.fetch_add(n, Ordering::Relaxed),
            Err(_) => stats.failed.fetch_add(n, Ordering::Relaxed),
        };
    };
    loop {
        // Sleep until the deadline; `on_end` wakes us early only for a full batch, a flush or
        // shutdown (a spurious wake-up just drains early).
        let wait = deadline.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::park_timeout(wait);
        }
        loop {
            match rx.try_recv() {
                Ok(Message::Span(s)) => {
                    pending.fetch_sub(1, Ordering::Relaxed);
                    batch.push(*s);
                    if batch.len() >= BATCH {
                        export(&mut exporter, &mut batch);
                    }
                }
                Ok(Message::Flush(done)) => {
                    export(&mut exporter, &mut batch);
                    let _ = done.send(());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    export(&mut exporter, &mut batch);
                    let _ = exporter.shutdown();
                    return;
                }
            }
        }
        if Instant::now() >= deadline {
            export(&mut exporter, &mut batch);
            deadline = Instant::now() + DELAY;
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {
                if self.pending.fetch_add(1, Ordering::Relaxed) + 1 >= BATCH {
                    self.waker.unpark();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.queue
            .send(Message::Flush(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        self.waker.unpark();
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| OTelSdkError::Timeout(Duration::from_secs(10)))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // A flush marker, then the thread ends when the last sender is gone (the provider's
        // processor is dropped after shutdown).
        if self.queue.try_send(Message::Flush(tx)).is_ok() {
            self.waker.unpark();
            let _ = rx.recv_timeout(timeout);
        }
        let _ = self.thread.lock().map(|mut t| t.take());
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(tx) = self.resource.get_mut().ok().and_then(|r| r.take()) {
            let _ = tx.try_send(resource.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_configured() {
        let s = TracingSection::default();
        assert_eq!(Settings::resolve(&s, env(&[])).unwrap(), None);
        let on = Settings::resolve(
            &s,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=x%20y"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_SERVICE_NAME", "hall-a"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(on.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(on.headers["b"], "x y");
        assert_eq!(on.sampler, SamplerChoice::Ratio(0.25));
        assert_eq!(on.service_name, "hall-a");
    }

    #[test]
    fn hall_toml_wins_over_the_variables() {
        let mut s = TracingSection {
            endpoint: Some("http://collector:4318/v1/traces".into()),
            sampling_ratio: Some(0.5),
            ..Default::default()
        };
        s.headers.insert("a".into(), "toml".into());
        let on = Settings::resolve(
            &s,
            env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://other/v1/traces",
                ),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=env"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(on.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(on.headers["a"], "toml");
        assert_eq!(on.sampler, SamplerChoice::ParentBasedRatio(0.5));
        assert_eq!(on.service_name, "wcp-hall");
        let bad = Settings::resolve(
            &TracingSection::default(),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ]),
        );
        assert!(bad.unwrap_err().contains("sometimes"));
    }
}
