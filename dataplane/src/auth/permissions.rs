//! A user's subject permissions, compiled from its `permissions` table: the
//! allowed and denied filters of publish and subscribe, and its response
//! permission. Checks walk the filters' bytes and allocate nothing.

use std::time::Duration;

use blipmq_protocol::{filter_covers, filter_matches};

use crate::config::{PermissionsConfig, SubjectRulesConfig};

/// What one user may publish and subscribe to.
#[derive(Debug, Default)]
pub struct Permissions {
    publish: SubjectRules,
    subscribe: SubjectRules,
    responses: Option<ResponseLimits>,
}

/// `allow_responses`: replies per request, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    pub max: u32,
    pub expires: Duration,
}

/// Allowed filters (`None`: all) and denied ones; deny wins. Also the
/// `export`/`import` filters of a leaf-node remote.
#[derive(Debug, Default)]
pub struct SubjectRules {
    allow: Option<Box<[Box<[u8]>]>>,
    deny: Box<[Box<[u8]>]>,
}

fn compile(filters: &[String]) -> Box<[Box<[u8]>]> {
    filters
        .iter()
        .map(|filter| filter.as_bytes().into())
        .collect()
}

impl SubjectRules {
    pub fn new(rules: Option<&SubjectRulesConfig>) -> SubjectRules {
        let Some(rules) = rules else {
            return SubjectRules::default();
        };
        let (allow, deny) = rules.allow_deny();
        SubjectRules {
            allow: allow.map(compile),
            deny: compile(deny),
        }
    }

    /// Allowed when an allowed filter admits `what` by `admits` (none:
    /// all are), unless a denied filter matches it read as a subject.
    fn permits(&self, what: &[u8], admits: fn(&[u8], &[u8]) -> bool) -> bool {
        let allowed = self
            .allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|filter| admits(filter, what)));
        allowed && !self.deny.iter().any(|filter| filter_matches(filter, what))
    }

    /// A literal subject (a publish, a delivery).
    pub fn permits_subject(&self, subject: &[u8]) -> bool {
        self.permits(subject, filter_matches)
    }

    /// A subscription filter: allowed when an allowed filter covers all it
    /// may match; denied when a denied filter matches it read as a subject
    /// (as nats-server does; subjects a wider filter shares with a denied
    /// one are then withheld on delivery, see [`Permissions::may_receive`]).
    pub fn permits_filter(&self, filter: &[u8]) -> bool {
        self.permits(filter, filter_covers)
    }
}

impl Permissions {
    pub fn new(config: &PermissionsConfig) -> Permissions {
        let responses = config
            .allow_responses
            .as_ref()
            .and_then(|responses| responses.limits())
            .map(|(max, expires)| ResponseLimits { max, expires });
        let mut publish = SubjectRules::new(config.publish.as_ref());
        if responses.is_some() && config.publish.is_none() {
            // nats-server: allow_responses alone denies every other publish.
            publish.allow = Some(Box::default());
        }
        Permissions {
            publish,
            subscribe: SubjectRules::new(config.subscribe.as_ref()),
            responses,
        }
    }

    pub fn may_publish(&self, subject: &[u8]) -> bool {
        self.publish.permits_subject(subject)
    }

    pub fn may_subscribe(&self, filter: &[u8]) -> bool {
        self.subscribe.permits_filter(filter)
    }

    /// Whether a message on `subject` may be delivered to this user: not
    /// when a subscribe deny matches it (a wildcard subscription that
    /// overlaps a denied filter) or, after a reload, when its filters no
    /// longer allow it.
    pub fn may_receive(&self, subject: &[u8]) -> bool {
        self.subscribe.permits_subject(subject)
    }

    pub fn responses(&self) -> Option<ResponseLimits> {
        self.responses
    }
}
