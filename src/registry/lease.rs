//! A lease in the registry: work that must run once at a time across machines (a
//! retraining job with a bucket registry, where every retrainer has its own work
//! folder and so its own local lock) holds `leases/<name>.json` while it runs.
//!
//! Taking and renewing are conditional writes ([`super::store::Store::update`]:
//! If-Match / If-None-Match on a bucket), so two takers never both win. A lease
//! expires `ttl` after its last renewal; the holder renews it every `ttl / 3` from a
//! thread of its own and releases it when dropped. A holder that dies (kill -9, a
//! lost machine) blocks the others for at most `ttl`, never forever, whatever its
//! process id was.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::{Registry, RegistryError};
use crate::clock::now_ms;

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Held {
    holder: String,
    expires_at_ms: i64,
}

/// A held lease; renewed while it lives, released on drop.
pub struct Lease {
    registry: Registry,
    key: String,
    holder: String,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .finish()
    }
}

/// A name for this holder: host, process and a random part (a restarted process
/// with the same id is another holder).
fn holder_name() -> String {
    let host = crate::kafka::host_name().unwrap_or_else(|| "unknown-host".into());
    format!(
        "{host}/pid-{}/{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

impl Registry {
    /// Takes the lease `name` for `ttl` (renewed every `ttl / 3` while held), or says
    /// who holds it and for how long yet.
    pub fn take_lease(&self, name: &str, ttl: Duration) -> Result<Lease, RegistryError> {
        let key = format!("leases/{name}.json");
        let holder = holder_name();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let taken = self.store.update(&key, |current| {
            let now = now_ms();
            if let Some(held) = current.and_then(|b| serde_json::from_slice::<Held>(b).ok())
                && held.expires_at_ms > now
                && held.holder != holder
            {
                return Ok((None, Err(held)));
            }
            let new = Held {
                holder: holder.clone(),
                expires_at_ms: now.saturating_add(ttl_ms),
            };
            Ok((Some(super::to_json(&new)?), Ok(())))
        })?;
        if let Err(held) = taken {
            return Err(RegistryError::Leased {
                location: self.store.describe(&key),
                holder: held.holder,
                seconds_left: ((held.expires_at_ms - now_ms()).max(0) / 1000) as u64,
            });
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let (registry, key, holder) = (self.clone(), key.clone(), holder.clone());
            std::thread::Builder::new()
                .name("registry-lease".into())
                .spawn(move || renew(&registry, &key, &holder, ttl, &stopped))
                .map_err(|e| RegistryError::Runtime(format!("cannot renew a lease: {e}")))?
        };
        Ok(Lease {
            registry: self.clone(),
            key,
            holder,
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }
}

/// Sets the lease's expiry if `holder` still holds it; `Ok(false)` when another
/// holder has it (or it is gone). Renewal and release are both this write.
fn set_expiry(
    registry: &Registry,
    key: &str,
    holder: &str,
    expires_at_ms: impl Fn() -> i64,
) -> Result<bool, RegistryError> {
    registry.store.update(key, |current| {
        match current.and_then(|b| serde_json::from_slice::<Held>(b).ok()) {
            Some(held) if held.holder == holder => {
                let new = Held {
                    expires_at_ms: expires_at_ms(),
                    ..held
                };
                Ok((Some(super::to_json(&new)?), true))
            }
            _ => Ok((None, false)),
        }
    })
}

/// Renews every `ttl / 3` until told to stop (or the lease is gone).
fn renew(registry: &Registry, key: &str, holder: &str, ttl: Duration, stop: &mpsc::Receiver<()>) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(ttl / 3) {
        match set_expiry(registry, key, holder, || now_ms().saturating_add(ttl_ms)) {
            Ok(true) => {}
            Ok(false) => {
                error!(
                    lease = key,
                    holder,
                    "Lost the lease (it expired and another holder took it); the work under it may now run twice."
                );
                return;
            }
            Err(err) => warn!(lease = key, error = %err, "Cannot renew the lease; trying again."),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        if let Err(err) = set_expiry(&self.registry, &self.key, &self.holder, || 0) {
            warn!(lease = %self.key, error = %err, "Cannot release the lease; it expires by itself.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::in_memory(dir.path());
        (dir, registry)
    }

    #[test]
    fn one_holder_at_a_time_and_a_released_lease_is_free() {
        let (_dir, registry) = registry();
        let first = registry
            .take_lease("retrain", Duration::from_secs(60))
            .unwrap();
        let err = registry
            .take_lease("retrain", Duration::from_secs(60))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&first.holder), "{text}");
        assert!(text.contains("leases/retrain.json"), "{text}");
        // Another name is another lease.
        let _other = registry
            .take_lease("something-else", Duration::from_secs(60))
            .unwrap();
        drop(first);
        registry
            .take_lease("retrain", Duration::from_secs(60))
            .unwrap();
    }

    #[test]
    fn a_lease_whose_holder_died_expires() {
        let (_dir, registry) = registry();
        let first = registry
            .take_lease("retrain", Duration::from_millis(300))
            .unwrap();
        // The holder dies: it neither renews nor releases.
        let mut dead = first;
        drop(dead.stop.take());
        dead.renewer.take().unwrap().join().unwrap();
        std::mem::forget(dead);
        assert!(
            registry
                .take_lease("retrain", Duration::from_millis(300))
                .is_err()
        );
        std::thread::sleep(Duration::from_millis(350));
        registry
            .take_lease("retrain", Duration::from_secs(60))
            .unwrap();
    }

    #[test]
    fn a_held_lease_is_renewed_past_its_ttl() {
        let (_dir, registry) = registry();
        let _held = registry
            .take_lease("retrain", Duration::from_millis(300))
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            registry
                .take_lease("retrain", Duration::from_millis(300))
                .is_err(),
            "renewed every 100 ms, so still held"
        );
    }
}
