//! Subject, filter and queue rules of protocol.md, and the reference matcher
//! against an independent model.

use blipmq_protocol::{
    filter_matches, validate_filter, validate_queue, validate_subject, SubjectError,
};
use proptest::prelude::*;

const MAX: usize = 255;

fn subject_ok(s: &[u8]) -> bool {
    validate_subject(s, MAX).is_ok()
}

fn filter_ok(s: &[u8]) -> bool {
    validate_filter(s, MAX).is_ok()
}

fn queue_ok(s: &[u8]) -> bool {
    validate_queue(s, MAX).is_ok()
}

/// Inputs that break the rules of every kind: subject, filter and queue.
fn invalid_everywhere() -> Vec<Vec<u8>> {
    let mut bad: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a b".to_vec(),
        b" a".to_vec(),
        b"a ".to_vec(),
        b"a\tb".to_vec(),
        b"a\nb".to_vec(),
        b"a\rb".to_vec(),
        b"a\x0bb".to_vec(),
        b"a\x0cb".to_vec(),
        b"a\x00b".to_vec(),
        b"\x1f".to_vec(),
        b"a\x7fb".to_vec(),
        b"\xff".to_vec(),
        b"a\xc3".to_vec(),                // truncated UTF-8
        b"\xc0\xaf".to_vec(),             // overlong
        b"\xed\xa0\x80".to_vec(),         // surrogate
        b"a\x80b".to_vec(),               // stray continuation byte
        "a\u{a0}b".as_bytes().to_vec(),   // NO-BREAK SPACE
        "a\u{2003}b".as_bytes().to_vec(), // EM SPACE
        "a\u{3000}b".as_bytes().to_vec(), // IDEOGRAPHIC SPACE
        "a\u{2028}b".as_bytes().to_vec(), // LINE SEPARATOR
        "a\u{85}b".as_bytes().to_vec(),   // NEXT LINE (C1 control)
        "a\u{9f}b".as_bytes().to_vec(),   // C1 control
        "\u{1680}".as_bytes().to_vec(),   // OGHAM SPACE MARK
    ];
    for b in 0u8..=0x20 {
        bad.push(vec![b'x', b, b'y']);
    }
    bad.push(vec![b'x', 0x7f]);
    bad
}

#[test]
fn invalid_everywhere_is_refused_everywhere() {
    for input in invalid_everywhere() {
        let shown = String::from_utf8_lossy(&input).into_owned();
        assert!(!subject_ok(&input), "subject {shown:?}");
        assert!(!filter_ok(&input), "filter {shown:?}");
        assert!(!queue_ok(&input), "queue {shown:?}");
    }
}

#[test]
fn specific_errors() {
    assert_eq!(validate_subject(b"", MAX), Err(SubjectError::Empty));
    assert_eq!(validate_filter(b"", MAX), Err(SubjectError::Empty));
    assert_eq!(validate_queue(b"", MAX), Err(SubjectError::Empty));
    assert_eq!(
        validate_subject(b"a..b", MAX),
        Err(SubjectError::EmptyToken)
    );
    assert_eq!(validate_subject(b"\xff", MAX), Err(SubjectError::NotUtf8));
    assert_eq!(
        validate_subject(b"a\tb", MAX),
        Err(SubjectError::BadCharacter)
    );
    assert_eq!(validate_subject(b"a.*", MAX), Err(SubjectError::Wildcard));
    assert_eq!(validate_subject(b">", MAX), Err(SubjectError::Wildcard));
    assert_eq!(validate_filter(b">.a", MAX), Err(SubjectError::TailNotLast));
    assert_eq!(
        validate_queue(b"a.b", MAX),
        Err(SubjectError::QueueNotToken)
    );
    assert_eq!(
        validate_subject(&[b'a'; 3], 2),
        Err(SubjectError::TooLong(2))
    );
}

#[test]
fn empty_tokens() {
    for input in [
        &b"a..b"[..],
        b".a",
        b"a.",
        b".",
        b"..",
        b"a.b.",
        b".>",
        b"*.",
        b"a..>",
    ] {
        let shown = String::from_utf8_lossy(input);
        assert!(!subject_ok(input), "subject {shown}");
        assert!(!filter_ok(input), "filter {shown}");
        assert!(!queue_ok(input), "queue {shown}");
    }
}

#[test]
fn valid_subjects() {
    for input in [
        "a",
        "a.b",
        "foo.bar.baz",
        "A.b.C",
        "_INBOX.abc123",
        "a*b",
        "a>",
        "*a",
        ">a",
        "a.b*.c",
        "a.>b",
        "$SYS.x",
        "a-b_c:d/e=f",
        "é",
        "été.中文.🦀",
        "x\u{ff0e}y", // FULLWIDTH FULL STOP is not '.'
    ] {
        assert!(subject_ok(input.as_bytes()), "subject {input:?}");
        assert!(filter_ok(input.as_bytes()), "filter {input:?}");
    }
}

#[test]
fn wildcards_in_subjects_are_refused() {
    for input in ["*", ">", "a.*", "*.a", "a.*.b", "a.>", ">.a", "a.>.b"] {
        assert_eq!(
            validate_subject(input.as_bytes(), MAX),
            Err(SubjectError::Wildcard),
            "{input}"
        );
    }
}

#[test]
fn filters() {
    for input in [
        "*", ">", "a.*", "*.a", "a.*.b", "a.>", "*.>", "*.*.*", "a.*.>", "a>.b", "a.>b.c", "a*.>",
    ] {
        assert!(filter_ok(input.as_bytes()), "filter {input}");
    }
    for input in [">.a", "a.>.b", ">.>", "a.>.>", ">.*"] {
        assert_eq!(
            validate_filter(input.as_bytes(), MAX),
            Err(SubjectError::TailNotLast),
            "{input}"
        );
    }
}

#[test]
fn queues() {
    for input in ["q", "workers", "a*b", "a>", "é中", "Q-1_2"] {
        assert!(queue_ok(input.as_bytes()), "queue {input}");
    }
    for input in ["a.b", ".", "a.", ".a"] {
        assert!(!queue_ok(input.as_bytes()), "queue {input}");
    }
}

#[test]
fn length_limit() {
    for max in [1usize, 2, 8, 255] {
        let exact = vec![b'a'; max];
        let over = vec![b'a'; max + 1];
        assert!(validate_subject(&exact, max).is_ok(), "subject len {max}");
        assert!(validate_filter(&exact, max).is_ok(), "filter len {max}");
        assert!(validate_queue(&exact, max).is_ok(), "queue len {max}");
        assert_eq!(
            validate_subject(&over, max),
            Err(SubjectError::TooLong(max))
        );
        assert_eq!(validate_filter(&over, max), Err(SubjectError::TooLong(max)));
        assert_eq!(validate_queue(&over, max), Err(SubjectError::TooLong(max)));
    }
    // Dotted, and counted in bytes, not chars.
    let dotted: Vec<u8> = b"ab."
        .iter()
        .cycle()
        .take(254)
        .chain(b"c")
        .copied()
        .collect();
    assert_eq!(dotted.len(), 255);
    assert!(subject_ok(&dotted));
    let mut over = dotted.clone();
    over.extend_from_slice(b"d");
    assert!(!subject_ok(&over));
    let e_acute = "é".repeat(127); // 254 bytes
    assert!(subject_ok(e_acute.as_bytes()));
    let e_acute = "é".repeat(128); // 256 bytes
    assert_eq!(
        validate_subject(e_acute.as_bytes(), MAX),
        Err(SubjectError::TooLong(MAX))
    );
}

#[test]
fn every_error_says_invalid_subject() {
    let errors = [
        SubjectError::Empty,
        SubjectError::TooLong(255),
        SubjectError::EmptyToken,
        SubjectError::NotUtf8,
        SubjectError::BadCharacter,
        SubjectError::Wildcard,
        SubjectError::TailNotLast,
        SubjectError::QueueNotToken,
    ];
    for e in errors {
        assert!(e.to_string().contains("invalid subject"), "{e:?}: {e}");
    }
    // And whatever the validators return.
    let mut inputs = invalid_everywhere();
    inputs.extend([
        b"a.*".to_vec(),
        b">.a".to_vec(),
        b"a.b".to_vec(),
        vec![b'a'; 300],
    ]);
    for input in inputs {
        for result in [
            validate_subject(&input, MAX),
            validate_filter(&input, MAX),
            validate_queue(&input, MAX),
        ] {
            if let Err(e) = result {
                assert!(e.to_string().contains("invalid subject"), "{e}");
            }
        }
    }
}

#[test]
fn matching() {
    let cases: &[(&str, &str, bool)] = &[
        ("a.*", "a.b", true),
        ("a.*", "a", false),
        ("a.*", "a.b.c", false),
        ("a.>", "a", false),
        ("a.>", "a.b", true),
        ("a.>", "a.b.c", true),
        ("a.>", "b.c", false),
        (">", "a", true),
        (">", "a.b", true),
        (">", "a.b.c.d.e", true),
        ("*", "a", true),
        ("*", "a.b", false),
        ("*.*", "a.b", true),
        ("*.b", "a.b", true),
        ("*.b", "a.c", false),
        ("a.*.c", "a.b.c", true),
        ("a.*.c", "a.b.d", false),
        ("*.>", "a", false),
        ("*.>", "a.b", true),
        ("a.b", "a.b", true),
        ("a.b", "a.b.c", false),
        ("a.b.c", "a.b", false),
        // `*` and `>` inside a token are literal.
        ("a*", "a*", true),
        ("a*", "ab", false),
        ("a*.b", "ax.b", false),
        ("a>", "a>", true),
        ("a>", "a.b", false),
        ("a.b>", "a.bc", false),
        ("a.*b", "a.*b", true),
        ("a.*b", "a.xb", false),
        // A subject literally containing `*` tokens is not a wildcard.
        ("a.b", "a.*", false),
        // Case-sensitive.
        ("a.B", "a.b", false),
        ("A.*", "a.b", false),
        ("Foo.>", "Foo.Bar", true),
        ("foo.>", "Foo.bar", false),
        // Unicode tokens.
        ("é.*", "é.中", true),
        ("e.*", "é.中", false),
    ];
    for &(filter, subject, expected) in cases {
        assert_eq!(
            filter_matches(filter.as_bytes(), subject.as_bytes()),
            expected,
            "{filter} vs {subject}"
        );
        assert_eq!(
            model_matches(filter.as_bytes(), subject.as_bytes()),
            expected,
            "model {filter} vs {subject}"
        );
    }
}

// ---------------------------------------------------------------------------
// An independent model: tokens in Vecs, matched recursively.

fn tokens(s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    for &b in s {
        if b == b'.' {
            out.push(Vec::new());
        } else {
            out.last_mut().unwrap().push(b);
        }
    }
    out
}

fn model_tokens(filter: &[Vec<u8>], subject: &[Vec<u8>]) -> bool {
    match (filter.split_first(), subject.split_first()) {
        (None, None) => true,
        (Some((f, [])), Some(_)) if f.as_slice() == b">" => true,
        (Some((f, f_rest)), Some((s, s_rest))) if f.as_slice() == b"*" || f == s => {
            model_tokens(f_rest, s_rest)
        }
        _ => false,
    }
}

fn model_matches(filter: &[u8], subject: &[u8]) -> bool {
    model_tokens(&tokens(filter), &tokens(subject))
}

/// Tokens from a small alphabet so that matches are frequent.
fn literal_token() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "ab", "A", "a*", ">b", "é"]).prop_map(String::from)
}

fn subject_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(literal_token(), 1..6).prop_map(|t| t.join("."))
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let token = prop_oneof![3 => literal_token(), 2 => Just("*".to_string())];
    (prop::collection::vec(token, 1..6), any::<bool>()).prop_map(|(mut t, tail)| {
        if tail {
            t.push(">".to_string());
        }
        t.join(".")
    })
}

/// A filter derived from a subject, so that roughly half of the pairs match.
fn matching_pair() -> impl Strategy<Value = (String, String)> {
    (subject_strategy(), prop::collection::vec(0u8..4, 6)).prop_map(|(subject, choices)| {
        let toks: Vec<&str> = subject.split('.').collect();
        let mut filter = Vec::new();
        for (i, tok) in toks.iter().enumerate() {
            match choices[i] {
                0 => filter.push("*"),
                1 if i > 0 => {
                    filter.push(">");
                    break;
                }
                _ => filter.push(tok),
            }
        }
        (filter.join("."), subject)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn matcher_agrees_with_model(filter in filter_strategy(), subject in subject_strategy()) {
        prop_assert!(filter_ok(filter.as_bytes()), "{}", filter);
        prop_assert!(subject_ok(subject.as_bytes()), "{}", subject);
        prop_assert_eq!(
            filter_matches(filter.as_bytes(), subject.as_bytes()),
            model_matches(filter.as_bytes(), subject.as_bytes()),
            "{} vs {}", filter, subject
        );
    }

    #[test]
    fn derived_filters_match((filter, subject) in matching_pair()) {
        prop_assert!(filter_ok(filter.as_bytes()), "{}", filter);
        prop_assert!(filter_matches(filter.as_bytes(), subject.as_bytes()), "{} vs {}", filter, subject);
        prop_assert!(model_matches(filter.as_bytes(), subject.as_bytes()));
        // A subject matches itself as a filter.
        prop_assert!(filter_matches(subject.as_bytes(), subject.as_bytes()));
    }

    #[test]
    fn matcher_agrees_with_model_on_arbitrary_bytes(
        filter in prop::collection::vec(prop::sample::select(b"ab.*>".to_vec()), 0..10),
        subject in prop::collection::vec(prop::sample::select(b"ab.*>".to_vec()), 0..10),
    ) {
        // Only valid pairs are specified; on those the two must agree.
        if filter_ok(&filter) && subject_ok(&subject) {
            prop_assert_eq!(filter_matches(&filter, &subject), model_matches(&filter, &subject));
        }
        // Never panics, whatever the input.
        let _ = filter_matches(&filter, &subject);
    }

    #[test]
    fn validators_agree_with_a_model(input in prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"ab.*>".to_vec()),
            1 => any::<u8>(),
        ],
        0..12,
    )) {
        let text = std::str::from_utf8(&input).ok();
        let chars_ok = text.is_some_and(|t| t.chars().all(|c| c == '.' || !(c.is_whitespace() || c.is_control())));
        let toks = tokens(&input);
        let no_empty = !input.is_empty() && toks.iter().all(|t| !t.is_empty());
        let no_wild = toks.iter().all(|t| t.as_slice() != b"*" && t.as_slice() != b">");
        let tail_last = toks.iter().rev().skip(1).all(|t| t.as_slice() != b">");
        prop_assert_eq!(subject_ok(&input), chars_ok && no_empty && no_wild);
        prop_assert_eq!(filter_ok(&input), chars_ok && no_empty && tail_last);
        prop_assert_eq!(queue_ok(&input), chars_ok && no_empty && toks.len() == 1);
    }
}
