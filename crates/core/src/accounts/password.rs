//! Argon2id password hashing, run off the async runtime behind a bounded permit count.
//!
//! Each hash holds ~19 MiB and ~20 ms of a core. Hashing on the async workers would stall
//! every other request during a sign-in burst, and unbounded parallel hashing would eat
//! memory; so hashes run in `spawn_blocking` only while holding one of a few permits, and
//! a request that cannot get a permit within a short wait is told to try again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// OWASP's recommended Argon2id parameters: m = 19 MiB, t = 2, p = 1.
pub const ARGON2_M_KIB: u32 = 19_456;
pub const ARGON2_T: u32 = 2;
pub const ARGON2_P: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// All hashing permits stayed busy for the whole wait.
    #[error("too many sign-in attempts are being processed; try again in a moment")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
pub struct PasswordHasherConfig {
    /// Concurrent hashes allowed (default: number of CPU cores).
    pub permits: usize,
    /// How long a request waits for a permit before getting `Busy`.
    pub max_wait: Duration,
}

impl Default for PasswordHasherConfig {
    fn default() -> Self {
        Self {
            permits: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            max_wait: Duration::from_secs(2),
        }
    }
}

/// Argon2 working memory, one buffer per permit, reused across hashes. Allocating 19 MiB
/// per hash would cost page faults on every sign-in, and the allocator keeps freed
/// buffers around per thread: a burst left the process hundreds of MiB larger. With a
/// pool, hashing memory is bounded by `permits × 19 MiB`, allocated once.
#[derive(Default)]
struct MemoryPool(Mutex<Vec<Vec<Block>>>);

impl MemoryPool {
    fn take(&self, blocks: usize) -> Vec<Block> {
        let reused = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reused {
            Some(buf) if buf.len() == blocks => buf,
            _ => vec![Block::default(); blocks],
        }
    }

    fn give_back(&self, buf: Vec<Block>, max: usize) {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Only standard-size buffers are kept (a legacy hash may have needed another size).
        if pool.len() < max && buf.len() == ARGON2_M_KIB as usize {
            pool.push(buf);
        }
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Hashing a new password (sign-up, a password change) needs one of these as well as a
    /// general permit, and there are half as many: a flood of sign-ups queues for its own
    /// permits and leaves at least half of the hashing to sign-ins.
    new_password_permits: Arc<Semaphore>,
    max_permits: usize,
    memory: Arc<MemoryPool>,
    max_wait: Duration,
    /// Verified against when an email is unknown, so that both failures cost the same.
    dummy_hash: Arc<str>,
    /// Verifications run so far: what the throttles bound (observed by tests).
    verifications: Arc<AtomicU64>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes into a PHC string using the given working memory.
fn hash_blocking(password: &[u8], memory: &mut [Block]) -> Result<String, HashError> {
    let internal = |e: &dyn std::fmt::Display| HashError::Internal(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| internal(&e))?;
    let argon = argon2();
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon.hash_password_into_with_memory(password, salt_bytes, out, &mut *memory).map_err(Into::into)
    })
    .map_err(|e| internal(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).map_err(|e| internal(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Recomputes a stored hash (with the parameters it records) and compares in constant time.
fn verify_blocking(password: &[u8], phc: &str, pool: &MemoryPool, max: usize) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params), Some(expected), Some(salt)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed), parsed.hash, parsed.salt)
    else {
        return false;
    };
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or_default();
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return false };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut memory = pool.take(params.block_count());
    let computed = Output::init_with(expected.len(), |out| {
        argon.hash_password_into_with_memory(password, salt_bytes, out, &mut memory).map_err(Into::into)
    });
    pool.give_back(memory, max);
    // `Output`'s equality is constant-time.
    computed.map(|c| c == expected).unwrap_or(false)
}

impl PasswordHasher {
    pub fn new(config: PasswordHasherConfig) -> Self {
        let mut random = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut random);
        let memory = Arc::new(MemoryPool::default());
        let mut buf = memory.take(ARGON2_M_KIB as usize);
        let dummy_hash = hash_blocking(&random, &mut buf).expect("hashing random bytes cannot fail");
        let permits = config.permits.max(1);
        memory.give_back(buf, permits);
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            new_password_permits: Arc::new(Semaphore::new((permits / 2).max(1))),
            max_permits: permits,
            memory,
            max_wait: config.max_wait,
            dummy_hash: dummy_hash.into(),
            verifications: Arc::default(),
        }
    }

    async fn run_blocking<T, F>(&self, new_password: bool, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let acquire = |semaphore: &Arc<Semaphore>| tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned());
        let own = match new_password {
            true => Some(
                acquire(&self.new_password_permits)
                    .await
                    .map_err(|_| HashError::Busy)?
                    .map_err(|_| HashError::Internal("hasher closed".into()))?,
            ),
            false => None,
        };
        let permit = acquire(&self.permits)
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Internal("hasher closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop((permit, own));
            out
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))
    }

    /// Hashes a new password into a PHC string (argon2id, OWASP parameters, random salt).
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let (pool, max) = (self.memory.clone(), self.max_permits);
        self.run_blocking(true, move || {
            let mut memory = pool.take(ARGON2_M_KIB as usize);
            let result = hash_blocking(&password, &mut memory);
            pool.give_back(memory, max);
            result
        })
        .await?
    }

    /// Verifies a password against a stored hash. With `None` (unknown account) it still
    /// does the full work against a dummy hash and returns `false`, so unknown emails and
    /// wrong passwords cannot be told apart by timing.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        self.verify_on(false, password, stored).await
    }

    /// [`Self::verify`] on the new-password permits: the password of a sign-up checked
    /// when its link is used counts against sign-up hashing, not sign-in's.
    pub async fn verify_sign_up(&self, password: &str, stored: &str) -> Result<bool, HashError> {
        self.verify_on(true, password, Some(stored)).await
    }

    async fn verify_on(&self, new_password: bool, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let (phc, known) = match stored {
            Some(phc) => (phc.to_string(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        let (pool, max) = (self.memory.clone(), self.max_permits);
        let verifications = self.verifications.clone();
        let ok = self
            .run_blocking(new_password, move || {
                verifications.fetch_add(1, Ordering::Relaxed);
                verify_blocking(&password, &phc, &pool, max)
            })
            .await?;
        Ok(ok && known)
    }

    /// How many passwords this hasher has verified (each one an Argon2 computation).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// True when a stored hash was made with other parameters than today's, so it should
    /// be replaced after the next successful sign-in.
    pub fn needs_rehash(stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else { return true };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => p.m_cost() != ARGON2_M_KIB || p.t_cost() != ARGON2_T || p.p_cost() != ARGON2_P,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// New passwords (sign-ups) queue for their own permits: a flood of them does not
    /// stand between a sign-in and the hashers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_new_passwords_leaves_hashers_to_sign_ins() {
        let hasher = PasswordHasher::new(PasswordHasherConfig { permits: 2, max_wait: Duration::from_secs(30) });
        let stored = hasher.hash("violet-anchor-tundra-42").await.unwrap();
        let hashed = Arc::new(AtomicU64::new(0));
        let flood: Vec<_> = (0..6)
            .map(|_| {
                let (hasher, hashed) = (hasher.clone(), hashed.clone());
                tokio::spawn(async move {
                    hasher.hash("a new password").await.unwrap();
                    hashed.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Once the flood holds every permit of its own, a general one is still free for a
        // sign-in (before, the flood took them all and the sign-in queued behind it).
        while hasher.new_password_permits.available_permits() > 0 && hashed.load(Ordering::SeqCst) < 6 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(hasher.permits.available_permits() >= 1, "the flood holds every hashing permit");
        assert!(hasher.verify("violet-anchor-tundra-42", Some(&stored)).await.unwrap());
        for f in flood {
            f.await.unwrap();
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters() {
        let hasher = PasswordHasher::new(PasswordHasherConfig::default());
        let phc = hasher.hash("violet-anchor-tundra-42").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!PasswordHasher::needs_rehash(&phc));
        assert!(hasher.verify("violet-anchor-tundra-42", Some(&phc)).await.unwrap());
        assert!(!hasher.verify("violet-anchor-tundra-43", Some(&phc)).await.unwrap());
        assert!(!hasher.verify("violet-anchor-tundra-42", None).await.unwrap());
        assert!(!hasher.verify("x", Some("not a phc string")).await.unwrap());
    }

    #[tokio::test]
    async fn interoperates_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::new(PasswordHasherConfig::default());
        // Ours verifies by the reference implementation...
        let ours = hasher.hash("violet-anchor-tundra-42").await.unwrap();
        assert!(argon2().verify_password(b"violet-anchor-tundra-42", &PasswordHash::new(&ours).unwrap()).is_ok());
        // ...and the reference implementation's hashes (even with other parameters) verify by ours.
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(4096, 3, 1, None).unwrap());
        let theirs =
            weak.hash_password(b"violet-anchor-tundra-42", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert!(hasher.verify("violet-anchor-tundra-42", Some(&theirs)).await.unwrap());
        assert!(!hasher.verify("violet-anchor-tundra-43", Some(&theirs)).await.unwrap());
        assert!(PasswordHasher::needs_rehash(&theirs));
    }

    #[test]
    fn weaker_parameters_need_rehash() {
        let weak = "$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNo";
        assert!(PasswordHasher::needs_rehash(weak));
        assert!(PasswordHasher::needs_rehash("garbage"));
    }

    #[tokio::test]
    async fn exhausted_permits_give_busy_after_the_wait() {
        let hasher = PasswordHasher::new(PasswordHasherConfig { permits: 1, max_wait: Duration::from_millis(10) });
        let held = hasher.permits.clone().acquire_owned().await.unwrap();
        assert!(matches!(hasher.hash("violet-anchor-tundra-42").await, Err(HashError::Busy)));
        drop(held);
        assert!(hasher.hash("violet-anchor-tundra-42").await.is_ok());
    }
}
