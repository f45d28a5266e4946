//! [`Registry`]: the models one server serves, by name, and each one's life: unloaded ->
//! loading -> loaded -> unloading -> unloaded. A request names its model (or none: the
//! default); [`Registry::get`] hands it the model's [`Served`] (its own engine worker and KV
//! pool), starting a load on first use and waiting, up to the load timeout, while it loads.
//! Before a load, the least recently used idle models are unloaded until the new one fits
//! under `--max-loaded-models` and `--max-model-memory` ([`room`]).
//!
//! Lookups run on the HTTP tasks under a std mutex that is never held across an await. Each
//! load is a tokio task of its own (a client that goes away does not cancel it) whose model
//! loading runs on `spawn_blocking`. An unload never drops a request: it first waits until
//! every handler has let go of the model's `Arc<Served>`, then shuts the engine down with a
//! long grace, which lets the in-flight sequences finish (the worker exits once idle and the
//! weights and KV pool go with it).

mod room;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use utoipa::ToSchema;

use super::error::ApiError;
use super::Served;
use crate::engine::EngineHandle;

/// How long an unload lets the model's in-flight requests run before ending them: long, since
/// an unload must not cut requests short (the worker exits as soon as it is idle).
pub const UNLOAD_GRACE: Duration = Duration::from_secs(3600);

/// One served model: the name requests use and where it loads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    /// A .gguf file, a Hugging Face directory or a hub id (`wick::model::load`'s spec).
    pub source: String,
}

/// A model loaded by a [`Loader`]: its engine and validator, and the bytes its weights take.
pub struct LoadedServed {
    pub served: Served,
    pub weight_bytes: u64,
}

/// Builds a model's [`Served`]: called on a blocking thread.
pub trait Loader: Send + Sync + 'static {
    /// Loads `spec` and starts its engine; the error is one line for the client and the log.
    fn load(&self, spec: &ModelSpec) -> Result<LoadedServed, String>;

    /// Bytes (weights + KV) `spec` will take once loaded, before it has been loaded once (after
    /// that the registry knows). 0: unknown.
    fn estimate_bytes(&self, _spec: &ModelSpec) -> u64 {
        0
    }
}

/// When models are unloaded and how long a request waits for one to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Most models loaded (or loading) at once; `None`: no limit.
    pub max_loaded: Option<usize>,
    /// Most bytes of weights + KV pools of the loaded models together; `None`: no limit. A
    /// model larger than this alone is still loaded, once every other one is unloaded.
    pub max_memory: Option<u64>,
    /// How long a request waits for its model to load before a 503 (with Retry-After).
    pub load_timeout: Duration,
    /// The grace an unload gives the model's in-flight requests.
    pub unload_grace: Duration,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            max_loaded: None,
            max_memory: None,
            load_timeout: Duration::from_secs(120),
            unload_grace: UNLOAD_GRACE,
        }
    }
}

/// A model's state as `/v1/models` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Loaded,
    Loading,
    /// Being unloaded: its last requests are finishing.
    Unloading,
    Unloaded,
}

/// One model as `/v1/models` shows it.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub name: String,
    pub state: ModelState,
    /// The context length, while loaded.
    pub max_context: Option<usize>,
}

enum Slot {
    Unloaded,
    /// `admitted`: the load task has been given room (only then does it take room).
    Loading {
        admitted: bool,
    },
    /// `released` resolves once the last `Arc<Served>` is gone (its sender lives in `Served`).
    Loaded {
        served: Arc<Served>,
        released: oneshot::Receiver<()>,
    },
    Unloading,
    /// The last load failed with this message; the next request tries again.
    Failed(String),
}

struct Entry {
    spec: ModelSpec,
    slot: Slot,
    /// The registry's clock at the last use (LRU order).
    last_used: u64,
    /// The bytes it takes loaded: estimated until it has loaded once, measured after.
    bytes: u64,
}

impl Entry {
    /// Loading, loaded or unloading: takes room.
    fn occupies(&self) -> bool {
        matches!(
            self.slot,
            Slot::Loading { admitted: true } | Slot::Loaded { .. } | Slot::Unloading
        )
    }
}

struct Inner {
    entries: Mutex<Vec<Entry>>,
    default: usize,
    default_name: String,
    /// Every slot change wakes the waiters, who look again.
    changed: Notify,
    /// `None`: models are installed by hand ([`Registry::install`]) and never unloaded.
    loader: Option<Arc<dyn Loader>>,
    limits: RegistryLimits,
    clock: AtomicU64,
    /// The default model has loaded once: the server is ready.
    started: AtomicBool,
}

/// The served models. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// One model, `name`, installed by [`Registry::install`] (tests, embedders).
    pub fn single(name: impl Into<String>) -> Self {
        let spec = ModelSpec {
            name: name.into(),
            source: String::new(),
        };
        Self::build(vec![spec], 0, None, RegistryLimits::default())
    }

    /// `models` (names unique, at least one), `default` the index of the default one; the
    /// loader loads each on first use. Nothing is loaded yet: see [`Registry::load_default`].
    pub fn new(
        models: Vec<ModelSpec>,
        default: usize,
        loader: Arc<dyn Loader>,
        limits: RegistryLimits,
    ) -> Result<Self, String> {
        if default >= models.len() {
            return Err(format!(
                "default model index {default} of {} models",
                models.len()
            ));
        }
        for (i, m) in models.iter().enumerate() {
            if models[..i].iter().any(|o| o.name == m.name) {
                return Err(format!("the model name `{}` is used twice", m.name));
            }
        }
        if limits.max_loaded == Some(0) {
            return Err("--max-loaded-models must be at least 1".into());
        }
        Ok(Self::build(models, default, Some(loader), limits))
    }

    fn build(
        models: Vec<ModelSpec>,
        default: usize,
        loader: Option<Arc<dyn Loader>>,
        limits: RegistryLimits,
    ) -> Self {
        let default_name = models[default].name.clone();
        let entries = models
            .into_iter()
            .map(|spec| Entry {
                bytes: loader.as_ref().map_or(0, |l| l.estimate_bytes(&spec)),
                spec,
                slot: Slot::Unloaded,
                last_used: 0,
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                entries: Mutex::new(entries),
                default,
                default_name,
                changed: Notify::new(),
                loader,
                limits,
                clock: AtomicU64::new(1),
                started: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panic under this lock leaves the slots consistent (each change is one assignment).
        match self.inner.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn tick(&self) -> u64 {
        self.inner.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The default model's name (requests that omit `model` get it).
    pub fn default_name(&self) -> &str {
        &self.inner.default_name
    }

    /// Every served name, the default first, the others in the order they were given.
    pub fn names(&self) -> Vec<String> {
        let entries = self.lock();
        let default = self.inner.default;
        let rest = entries.iter().enumerate().filter(|(i, _)| *i != default);
        std::iter::once(&entries[default])
            .chain(rest.map(|(_, e)| e))
            .map(|e| e.spec.name.clone())
            .collect()
    }

    /// The index of `model` (absent: the default), or 404 naming the served ones.
    fn index(&self, model: Option<&str>) -> Result<usize, ApiError> {
        let Some(name) = model else {
            return Ok(self.inner.default);
        };
        let found = self.lock().iter().position(|e| e.spec.name == name);
        // The lock is released here: `names` takes it again.
        found.ok_or_else(|| ApiError::model_not_found(name, &self.names()))
    }

    /// 404 unless `model` is absent or served.
    pub fn check(&self, model: Option<&str>) -> Result<(), ApiError> {
        self.index(model).map(|_| ())
    }

    /// The default model has loaded (once; it may have been unloaded since, and reloads on use).
    pub fn started(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// The default model if it is loaded now; 503 `model_loading` otherwise. Never waits.
    pub fn default_now(&self) -> Result<Arc<Served>, ApiError> {
        match &self.lock()[self.inner.default].slot {
            Slot::Loaded { served, .. } => Ok(served.clone()),
            _ => Err(ApiError::Loading),
        }
    }

    /// The default model's engine, if it is loaded (metrics, tests).
    pub fn default_engine(&self) -> Option<EngineHandle> {
        self.default_now().ok().map(|s| s.engine.clone())
    }

    /// Installs `served` as the default model, loaded; ignored once the default has loaded.
    pub fn install(&self, served: Served) {
        let mut entries = self.lock();
        let e = &mut entries[self.inner.default];
        if self.inner.started.load(Ordering::SeqCst) {
            return;
        }
        e.slot = self.loaded_slot(&e.spec.name, served);
        e.last_used = self.tick();
        self.inner.started.store(true, Ordering::SeqCst);
        drop(entries);
        self.inner.changed.notify_waiters();
    }

    fn loaded_slot(&self, name: &str, mut served: Served) -> Slot {
        let (tx, released) = oneshot::channel();
        served.name = name.to_string();
        served.released = Some(tx);
        Slot::Loaded {
            served: Arc::new(served),
            released,
        }
    }

    /// Each model's name, state and context length, the default first.
    pub fn statuses(&self) -> Vec<ModelStatus> {
        let names = self.names();
        let entries = self.lock();
        names
            .into_iter()
            .filter_map(|n| entries.iter().find(|e| e.spec.name == n))
            .map(|e| {
                let (state, max_context) = match &e.slot {
                    Slot::Loaded { served, .. } => {
                        (ModelState::Loaded, Some(served.engine.limits().max_context))
                    }
                    Slot::Loading { .. } => (ModelState::Loading, None),
                    Slot::Unloading => (ModelState::Unloading, None),
                    Slot::Unloaded | Slot::Failed(_) => (ModelState::Unloaded, None),
                };
                ModelStatus {
                    name: e.spec.name.clone(),
                    state,
                    max_context,
                }
            })
            .collect()
    }

    /// `model` (absent: the default), loading it if need be and waiting up to the load
    /// timeout: 404 for an unknown name, 503 `model_loading` past the timeout (or at once when
    /// the registry has no loader), 500 naming the failure when its load failed.
    pub async fn get(&self, model: Option<&str>) -> Result<Arc<Served>, ApiError> {
        let idx = self.index(model)?;
        let deadline = tokio::time::Instant::now() + self.inner.limits.load_timeout;
        self.wait(idx, Some(deadline)).await
    }

    /// Loads the default model and waits for it, however long it takes (the server's start).
    pub async fn load_default(&self) -> Result<(), String> {
        match self.wait(self.inner.default, None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn wait(
        &self,
        idx: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Arc<Served>, ApiError> {
        let mut fresh = true;
        loop {
            // Registered before looking, so a change between the look and the wait wakes it.
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(served) = self.look(idx, fresh)? {
                return Ok(served);
            }
            fresh = false;
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Err(ApiError::Loading);
                    }
                }
                None => notified.await,
            }
        }
    }

    /// One look at `idx`'s slot: the model when loaded; `None` to wait; starts a load when it
    /// is unloaded (or its last load failed and this request has not waited on that load).
    fn look(&self, idx: usize, fresh: bool) -> Result<Option<Arc<Served>>, ApiError> {
        let now = self.tick();
        let mut entries = self.lock();
        let e = &mut entries[idx];
        match &e.slot {
            Slot::Loaded { served, .. } => {
                e.last_used = now;
                return Ok(Some(served.clone()));
            }
            Slot::Loading { .. } | Slot::Unloading => return Ok(None),
            Slot::Failed(msg) if !fresh => return Err(ApiError::Internal(msg.clone())),
            Slot::Unloaded | Slot::Failed(_) => {}
        }
        let Some(loader) = self.inner.loader.clone() else {
            return Err(ApiError::Loading);
        };
        e.slot = Slot::Loading { admitted: false };
        e.last_used = now;
        drop(entries);
        self.inner.changed.notify_waiters();
        tokio::spawn(self.clone().load(idx, loader));
        Ok(None)
    }

    /// The load task: makes room, loads on a blocking thread, installs the result.
    async fn load(self, idx: usize, loader: Arc<dyn Loader>) {
        self.make_room(idx).await;
        let spec = self.lock()[idx].spec.clone();
        tracing::info!(model = %spec.name, source = %spec.source, "loading");
        let task_spec = spec.clone();
        let result = tokio::task::spawn_blocking(move || loader.load(&task_spec))
            .await
            .unwrap_or_else(|e| Err(format!("the loading task: {e}")));
        let mut entries = self.lock();
        let e = &mut entries[idx];
        match result {
            Ok(loaded) => {
                let kv = loaded.served.engine.stats().kv_cache_bytes;
                e.bytes = loaded.weight_bytes + kv;
                tracing::info!(model = %spec.name, bytes = e.bytes, "loaded");
                e.slot = self.loaded_slot(&spec.name, loaded.served);
                // Loaded just now: not the least recently used.
                e.last_used = self.tick();
                if idx == self.inner.default {
                    self.inner.started.store(true, Ordering::SeqCst);
                }
            }
            Err(msg) => {
                let msg = format!("the model `{}` could not be loaded: {msg}", spec.name);
                tracing::error!("{msg}");
                e.slot = Slot::Failed(msg);
            }
        }
        drop(entries);
        self.inner.changed.notify_waiters();
    }

    /// Drains a model taken out of its slot (now `Unloading`): waits until every handler has
    /// dropped its `Arc<Served>`, shuts the engine down (its in-flight requests finish), then
    /// marks the slot unloaded.
    async fn drain(&self, idx: usize, served: Arc<Served>, released: oneshot::Receiver<()>) {
        let name = served.name().to_string();
        tracing::info!(model = %name, "unloading: waiting for its requests");
        let engine = served.engine.clone();
        drop(served);
        // Nothing will submit to this engine again.
        let _ = released.await;
        let grace = self.inner.limits.unload_grace;
        let _ = tokio::task::spawn_blocking(move || engine.shutdown(grace)).await;
        self.lock()[idx].slot = Slot::Unloaded;
        tracing::info!(model = %name, "unloaded");
        self.inner.changed.notify_waiters();
    }

    /// Shuts every loaded engine down within `grace` (the server's drain), in parallel.
    pub fn shutdown(&self, grace: Duration) {
        let engines: Vec<EngineHandle> = self
            .lock()
            .iter()
            .filter_map(|e| match &e.slot {
                Slot::Loaded { served, .. } => Some(served.engine.clone()),
                _ => None,
            })
            .collect();
        std::thread::scope(|s| {
            for engine in &engines {
                s.spawn(move || engine.shutdown(grace));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_loader_an_empty_default_is_503_at_once_and_unknown_names_404() {
        let r = Registry::single("tiny");
        assert_eq!(r.get(None).await.err(), Some(ApiError::Loading));
        assert_eq!(r.get(Some("tiny")).await.err(), Some(ApiError::Loading));
        let e = r.get(Some("gpt")).await.err().expect("unknown");
        assert_eq!(e.parts().2, Some("model_not_found"));
        assert!(e.to_string().contains("`gpt`") && e.to_string().contains("tiny"));
        assert!(!r.started() && r.default_engine().is_none());
        let s = r.statuses();
        assert_eq!((s.len(), s[0].state), (1, ModelState::Unloaded));
    }

    struct Never;

    impl Loader for Never {
        fn load(&self, spec: &ModelSpec) -> Result<LoadedServed, String> {
            Err(format!("{} is not a model", spec.source))
        }
    }

    fn spec(name: &str) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            source: format!("{name}.gguf"),
        }
    }

    #[tokio::test]
    async fn names_keep_the_default_first_and_a_failed_load_is_named() {
        let models = vec![spec("a"), spec("b"), spec("c")];
        let r =
            Registry::new(models, 1, Arc::new(Never), RegistryLimits::default()).expect("registry");
        assert_eq!(r.names(), ["b", "a", "c"]);
        assert_eq!(r.default_name(), "b");
        let e = r.get(Some("c")).await.err().expect("fails");
        assert_eq!(e.parts().0.as_u16(), 500);
        assert!(
            e.to_string().contains("`c` could not be loaded: c.gguf"),
            "{e}"
        );
        let e = r.load_default().await.expect_err("fails");
        assert!(e.contains("`b`"), "{e}");
        let twice = vec![spec("a"), spec("a")];
        let e = Registry::new(twice, 0, Arc::new(Never), RegistryLimits::default());
        assert!(e.err().expect("refused").contains("`a` is used twice"));
    }
}
