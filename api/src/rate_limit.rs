//! Rate limits: token buckets (governor's GCRA) per API key and per client
//! address, checked before any work is done for a request.
//!
//! Defaults (`[api.rate_limit]` in the config file, or the environment):
//!
//! | key | default | environment |
//! |---|---|---|
//! | `per_key_per_second` | 100 | `OPSQUEUE_API__RATE_LIMIT__PER_KEY_PER_SECOND` |
//! | `per_key_burst` | 200 | `OPSQUEUE_API__RATE_LIMIT__PER_KEY_BURST` |
//! | `per_address_per_second` | 200 | `OPSQUEUE_API__RATE_LIMIT__PER_ADDRESS_PER_SECOND` |
//! | `per_address_burst` | 400 | `OPSQUEUE_API__RATE_LIMIT__PER_ADDRESS_BURST` |
//!
//! `per_second` is the refill rate and `burst` the bucket size (a burst of 0
//! means "the same as per_second"); `per_second = 0` turns that limit off.
//! A refused request gets `429 rate_limited` with `Retry-After` in whole
//! seconds (at least 1).
//!
//! The address is the TCP peer: behind a reverse proxy every request comes
//! from the proxy, so either raise the per-address limit there or turn it
//! off and rely on the per-key one. `/health` is not limited. Buckets are in
//! memory, per API process; idle ones are dropped every minute.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use opsqueue_shared::config::RateLimitConfig;

use crate::problem::ApiError;

/// How often idle buckets are forgotten.
pub const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

pub struct RateLimits {
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn limiter<K: Clone + Hash + Eq>(
    per_second: u32,
    burst: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    let per_second = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(per_second);
    Some(RateLimiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

fn check<K: Clone + Hash + Eq>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Result<(), ApiError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    })
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_key: limiter(config.per_key_per_second, config.per_key_burst),
            per_address: limiter(config.per_address_per_second, config.per_address_burst),
        }
    }

    pub fn check_address(&self, address: IpAddr) -> Result<(), ApiError> {
        check(&self.per_address, &address)
    }

    pub fn check_key(&self, key_id: &str) -> Result<(), ApiError> {
        check(&self.per_key, &key_id.to_owned())
    }

    /// Drops the buckets that are full again, so memory stays bounded.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_key {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_key: u32, key_burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            per_key_per_second: per_key,
            per_key_burst: key_burst,
            per_address_per_second: 0,
            per_address_burst: 0,
        }
    }

    #[test]
    fn a_key_past_its_burst_is_refused_with_a_retry_after_of_at_least_a_second() {
        let limits = RateLimits::new(&config(1, 3));
        for _ in 0..3 {
            limits.check_key("k1").unwrap();
        }
        match limits.check_key("k1") {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected a refusal, got {other:?}"),
        }
        limits
            .check_key("k2")
            .expect("another key has its own bucket");
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = RateLimits::new(&config(0, 0));
        for _ in 0..10_000 {
            limits.check_key("k").unwrap();
            limits.check_address("127.0.0.1".parse().unwrap()).unwrap();
        }
    }
}
