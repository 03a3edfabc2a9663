//! Single-use nonces with expiry. Used and expired nonces are remembered for one more
//! lifetime so a replay is reported as such rather than as unknown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wire::api::NONCE_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("nonce was not issued by this coordinator (or before its restart)")]
    Unknown,
    #[error("nonce expired before it was used")]
    Expired,
    #[error("nonce was already used")]
    Replayed,
    #[error("too many outstanding nonces ({0}); retry later")]
    TooMany(usize),
}

enum Entry {
    Live { expires: Instant },
    Used { forget: Instant },
}

pub struct NonceStore {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<[u8; NONCE_LEN], Entry>>,
}

impl NonceStore {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self { ttl, max, entries: Mutex::new(HashMap::new()) }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; NONCE_LEN], Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent; keep serving.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prune(entries: &mut HashMap<[u8; NONCE_LEN], Entry>, now: Instant, ttl: Duration) {
        entries.retain(|_, e| match e {
            Entry::Live { expires } => *expires + ttl > now,
            Entry::Used { forget } => *forget > now,
        });
    }

    pub fn issue(&self) -> Result<[u8; NONCE_LEN], NonceError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.max {
            Self::prune(&mut entries, now, self.ttl);
            if entries.len() >= self.max {
                return Err(NonceError::TooMany(entries.len()));
            }
        }
        let nonce: [u8; NONCE_LEN] = rand::random();
        entries.insert(nonce, Entry::Live { expires: now + self.ttl });
        Ok(nonce)
    }

    /// Marks the nonce used; succeeds once per issued, unexpired nonce.
    pub fn consume(&self, nonce: &[u8]) -> Result<(), NonceError> {
        let key: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| NonceError::Unknown)?;
        let now = Instant::now();
        let mut entries = self.lock();
        let entry = entries.get_mut(&key).ok_or(NonceError::Unknown)?;
        match *entry {
            Entry::Used { .. } => Err(NonceError::Replayed),
            Entry::Live { expires } if expires <= now => {
                *entry = Entry::Used { forget: expires + self.ttl };
                Err(NonceError::Expired)
            }
            Entry::Live { expires } => {
                *entry = Entry::Used { forget: expires + self.ttl };
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_expiry_and_limits() {
        let store = NonceStore::new(Duration::from_secs(60), 3);
        let a = store.issue().unwrap();
        assert_eq!(store.consume(&a), Ok(()));
        assert_eq!(store.consume(&a), Err(NonceError::Replayed));
        assert_eq!(store.consume(&[0u8; NONCE_LEN]), Err(NonceError::Unknown));
        assert_eq!(store.consume(b"short"), Err(NonceError::Unknown));
        store.issue().unwrap();
        store.issue().unwrap();
        assert!(matches!(store.issue(), Err(NonceError::TooMany(3))));

        let quick = NonceStore::new(Duration::from_millis(20), 10);
        let n = quick.issue().unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(quick.consume(&n), Err(NonceError::Expired));
        assert_eq!(quick.consume(&n), Err(NonceError::Replayed));
    }
}
