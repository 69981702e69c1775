//! The routed layer: some top-level folders live in another store.
//!
//! An offline seed writes a vault's data (packs, index objects, the point
//! manifest) into a staging folder instead of the vault's store, while the
//! records of the job that writes it (the catalog) stay in the store. The
//! routed store sends every call on an object of the routed folders to the
//! `aside` store, and every other call to the `main` one; neither sees the
//! other's objects, so a backup through it is self-contained in `aside`.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::SystemTime;

use crate::{AbandonedUpload, Capabilities, ObjectInfo, PutMode, Store, StoreError};

/// `main`, with the objects of some top-level folders kept in `aside`.
pub struct RoutedStore {
    main: Arc<dyn Store>,
    aside: Arc<dyn Store>,
    folders: Vec<String>,
}

impl RoutedStore {
    pub fn new(main: Arc<dyn Store>, aside: Arc<dyn Store>, folders: &[&str]) -> Self {
        Self { main, aside, folders: folders.iter().map(|f| (*f).to_string()).collect() }
    }

    fn route(&self, name: &str) -> &Arc<dyn Store> {
        let top = name.split('/').next().unwrap_or_default();
        if self.folders.iter().any(|f| f == top) { &self.aside } else { &self.main }
    }
}

impl Store for RoutedStore {
    fn location(&self) -> String {
        format!("{} (with {} in {})", self.main.location(), self.folders.join(", "), self.aside.location())
    }

    fn capabilities(&self) -> Capabilities {
        self.main.capabilities()
    }

    fn lock_object(&self, name: &str, lock: &crate::store::ObjectLock) -> Result<bool, StoreError> {
        self.route(name).lock_object(name, lock)
    }

    fn object_lock(&self, name: &str) -> Result<Option<crate::store::ObjectLock>, StoreError> {
        self.route(name).object_lock(name)
    }

    fn can_lock(&self) -> Result<bool, StoreError> {
        self.main.can_lock()
    }

    fn delete_version(&self, name: &str) -> Result<(), StoreError> {
        self.route(name).delete_version(name)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.route(name).get(name)
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.route(name).get_range(name, offset, len)
    }

    fn get_range_into(&self, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        self.route(name).get_range_into(name, offset, len, buf)
    }

    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        self.route(name).put(name, data, mode)
    }

    /// A prefix inside a routed folder lists `aside`; any other lists
    /// `main` without its routed folders; the empty prefix lists both.
    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        if !prefix.is_empty() {
            return self.route(prefix).list_pages(prefix, visit);
        }
        let mut all: Vec<ObjectInfo> =
            self.main.list("")?.into_iter().filter(|o| std::ptr::eq(self.route(&o.name), &self.main)).collect();
        all.extend(self.aside.list("")?.into_iter().filter(|o| !std::ptr::eq(self.route(&o.name), &self.main)));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        for page in all.chunks(crate::LIST_PAGE) {
            if visit(page.to_vec()).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        self.route(name).stat(name)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.route(name).delete(name)
    }

    fn abandoned_uploads(&self, before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        let mut all = self.main.abandoned_uploads(before)?;
        all.extend(self.aside.abandoned_uploads(before)?);
        Ok(all)
    }

    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        self.route(&upload.name).discard_upload(upload)
    }
}
