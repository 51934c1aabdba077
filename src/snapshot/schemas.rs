//! Compiled input schemas of verified packages, cached with the snapshot they belong to.
//!
//! A store path is content-addressed and read-only, so it always holds the same schema: a
//! compiled schema is reused for every dispatch of the snapshot and dropped with it on reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A verified package's compiled input schema: `Ok(None)` when it has none, `Err` (why) when
/// it is unusable.
pub type CompiledSchema = Result<Option<Arc<jsonschema::Validator>>, String>;

/// Compiled input schemas by verified store path (see `Loaded::input_schemas`), bounded.
#[derive(Debug, Default)]
pub struct SchemaCache(std::sync::Mutex<std::collections::HashMap<PathBuf, CompiledSchema>>);

/// The cache holds at most this many packages' schemas; past it, it starts again empty.
pub const MAX_CACHED_SCHEMAS: usize = 1024;

impl SchemaCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, CompiledSchema>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, dir: &Path) -> Option<CompiledSchema> {
        self.lock().get(dir).cloned()
    }

    pub fn put(&self, dir: PathBuf, compiled: CompiledSchema) {
        let mut map = self.lock();
        if map.len() >= MAX_CACHED_SCHEMAS {
            map.clear();
        }
        map.insert(dir, compiled);
    }
}
