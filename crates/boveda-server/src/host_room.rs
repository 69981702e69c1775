//! Room for registered hosts' uploads in the server's memory. Packs share
//! a budget ([`PACK_BUDGET_MIB`]); index objects, small, have their own
//! ([`INDEX_BUDGET_MIB`]), so that a host's index objects never wait
//! behind packs; and one host holds at most [`PER_HOST`] bytes at once,
//! so that no host (one taken over, sending slowly on purpose) holds the
//! budget of the others. An upload that finds no room within [`WAIT`] is
//! answered 503 with `Retry-After`, and the host tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use boveda_service::RecordId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

pub const PACK_BUDGET_MIB: u32 = 512;
pub const INDEX_BUDGET_MIB: u32 = 64;
/// The largest index object a host sends.
pub const INDEX_LIMIT: u64 = 16 << 20;
/// Bytes one host may have in the server's memory at once.
pub const PER_HOST: u64 = 192 << 20;
/// How long an upload waits for room.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct HostRoom {
    packs: Arc<Semaphore>,
    index: Arc<Semaphore>,
    by_host: Mutex<HashMap<RecordId, u64>>,
}

impl Default for HostRoom {
    fn default() -> Self {
        HostRoom {
            packs: Arc::new(Semaphore::new(PACK_BUDGET_MIB as usize)),
            index: Arc::new(Semaphore::new(INDEX_BUDGET_MIB as usize)),
            by_host: Mutex::default(),
        }
    }
}

/// A host's share counted for one upload: given back when dropped.
struct Share {
    room: Arc<HostRoom>,
    host: RecordId,
    bytes: u64,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Ok(mut by_host) = self.room.by_host.lock()
            && let Some(n) = by_host.get_mut(&self.host)
        {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                by_host.remove(&self.host);
            }
        }
    }
}

/// Room taken for one upload: given back when dropped.
pub struct Held {
    _permit: OwnedSemaphorePermit,
    _share: Share,
}

fn busy(why: &str) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{why}: try again shortly"));
    e.retry_after = Some(1);
    e
}

impl HostRoom {
    /// Takes room for `bytes` of `host`'s (an index object's, or a pack's).
    ///
    /// # Errors
    /// 503 when the host holds its share already, or no room came in time.
    pub async fn take(self: &Arc<Self>, host: RecordId, index: bool, bytes: u64) -> Result<Held, ApiError> {
        {
            let mut by_host = self.by_host.lock().map_err(|_| ApiError::internal("host room poisoned"))?;
            let held = by_host.entry(host).or_default();
            if *held + bytes > PER_HOST {
                return Err(busy("this host has as many uploads in the server's memory as it may"));
            }
            *held += bytes;
        }
        let share = Share { room: self.clone(), host, bytes };
        let mib = u32::try_from(bytes.div_ceil(1 << 20).max(1)).unwrap_or(u32::MAX);
        let budget = if index { &self.index } else { &self.packs };
        match tokio::time::timeout(WAIT, budget.clone().acquire_many_owned(mib)).await {
            Ok(Ok(permit)) => Ok(Held { _permit: permit, _share: share }),
            Ok(Err(_)) => Err(ApiError::internal("the server is closing")),
            Err(_) => Err(busy("the server's room for uploads is taken")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_host_cannot_hold_the_room_of_the_others_and_index_objects_never_wait_behind_packs() {
        let room = Arc::new(HostRoom::default());
        let (slow, other) = (RecordId::random(), RecordId::random());
        let held = room.take(slow, false, 160 << 20).await.expect("room");
        let err = room.take(slow, false, 160 << 20).await.err().expect("past its share");
        assert!(err.status == StatusCode::SERVICE_UNAVAILABLE && err.message.contains("as many uploads"), "{err:?}");
        // every pack budget taken by three other hosts: index objects still go
        let others: Vec<Held> =
            futures::future::join_all((0..2).map(|_| room.take(RecordId::random(), false, 176 << 20)))
                .await
                .into_iter()
                .map(|h| h.expect("room"))
                .collect();
        assert_eq!(room.packs.available_permits(), 0);
        room.take(other, true, 1 << 20).await.expect("an index object's own room");
        drop((held, others));
        assert_eq!(room.packs.available_permits(), PACK_BUDGET_MIB as usize, "all given back");
        assert!(room.by_host.lock().expect("lock").is_empty(), "every share given back");
    }
}
