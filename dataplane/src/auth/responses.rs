//! `allow_responses`: the reply subjects of requests a connection received,
//! which it may publish to a bounded number of times within a bounded time
//! even where its publish permissions do not reach.

use std::collections::HashMap;
use std::time::Instant;

use super::ResponseLimits;

/// Grants kept per connection; past this, expired ones are dropped and then
/// the oldest, so that a flood of requests cannot grow a connection's
/// memory without bound.
pub const MAX_GRANTS: usize = 4096;

/// One connection's open reply grants.
#[derive(Debug, Default)]
pub struct ReplyGrants {
    grants: HashMap<Box<[u8]>, Grant>,
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    left: u32,
    expires: Instant,
}

impl ReplyGrants {
    /// A request with reply subject `reply` was delivered: allow `max`
    /// replies until `expires` from `now`. (One allocation per request, for
    /// users with `allow_responses` only; nats-server keeps the same map.)
    pub fn grant(&mut self, reply: &[u8], limits: ResponseLimits, now: Instant) {
        let grant = Grant {
            left: limits.max,
            expires: now + limits.expires,
        };
        if let Some(existing) = self.grants.get_mut(reply) {
            *existing = grant;
            return;
        }
        if self.grants.len() >= MAX_GRANTS {
            self.grants.retain(|_, grant| grant.expires > now);
        }
        if self.grants.len() >= MAX_GRANTS {
            let oldest = self
                .grants
                .iter()
                .min_by_key(|(_, grant)| grant.expires)
                .map(|(reply, _)| reply.clone());
            if let Some(oldest) = oldest {
                self.grants.remove(&oldest);
            }
        }
        self.grants.insert(reply.into(), grant);
    }

    /// Uses one reply of the grant for `subject`; false when there is none
    /// left or it expired.
    pub fn take(&mut self, subject: &[u8], now: Instant) -> bool {
        let Some(grant) = self.grants.get_mut(subject) else {
            return false;
        };
        let valid = grant.expires > now;
        if valid {
            grant.left -= 1;
        }
        if !valid || grant.left == 0 {
            self.grants.remove(subject);
        }
        valid
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}
