use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;

fn table(toml: &str) -> UserTable {
    UserTable::new(&Config::from_toml_str(toml).expect("valid").auth.users)
}

#[test]
fn users_are_found_by_password_or_token_and_debug_shows_names_only() {
    let users = table(
        r#"
[[auth.users]]
user = "a"
password = "pa55"
[[auth.users]]
user = "b"
token = "tok-b"
[[auth.users]]
user = "c"
token = "tok-c"
"#,
    );
    assert_eq!(users.by_password("a", "pa55").map(|u| u.name()), Some("a"));
    assert!(users.by_password("a", "pa5").is_none());
    assert!(
        users.by_password("b", "tok-b").is_none(),
        "a token is no password"
    );
    assert_eq!(users.by_token("tok-c").map(|u| u.name()), Some("c"));
    assert!(users.by_token("pa55").is_none(), "a password is no token");
    assert!(users.by_token("tok-").is_none());
    let debug = format!("{users:?} {:?}", users.find("a").unwrap());
    assert!(debug.contains('a') && debug.contains('c'), "{debug}");
    for secret in ["pa55", "tok-b", "tok-c"] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn allow_responses_keeps_an_explicit_publish_allow() {
    let users = table(
        r#"
[[auth.users]]
user = "a"
password = "p"
permissions = { publish = ["status.>"], allow_responses = { max = 3 } }
[[auth.users]]
user = "off"
password = "p"
permissions.allow_responses = false
"#,
    );
    let a = users.find("a").unwrap().permissions();
    assert!(a.may_publish(b"status.up"));
    assert!(!a.may_publish(b"other"));
    assert_eq!(
        a.responses(),
        Some(ResponseLimits {
            max: 3,
            expires: Duration::from_secs(120)
        })
    );
    let off = users.find("off").unwrap().permissions();
    assert_eq!(off.responses(), None);
    assert!(off.may_publish(b"anything"), "false is no restriction");
}

#[test]
fn reply_grants_are_bounded_and_drop_expired_ones_first() {
    let limits = ResponseLimits {
        max: 1,
        expires: Duration::from_secs(1),
    };
    let start = Instant::now();
    let mut grants = ReplyGrants::default();
    grants.grant(b"old", limits, start);
    let later = start + Duration::from_millis(500);
    for n in 0..responses::MAX_GRANTS + 10 {
        grants.grant(format!("r.{n}").as_bytes(), limits, later);
    }
    assert_eq!(grants.len(), responses::MAX_GRANTS);
    assert!(!grants.take(b"old", later), "the oldest went first");
    assert!(grants.take(b"r.4105", later), "the newest stays");
    assert!(!grants.take(b"r.4105", later), "once");
    // Past their expiry, the next grant over the bound drops them all.
    let expired = later + Duration::from_secs(2);
    grants.grant(b"fresh", limits, expired);
    grants.grant(b"fresh2", limits, expired);
    assert!(grants.len() <= 3, "{}", grants.len());
    assert!(!grants.is_empty());
}
