//! Subject, filter and queue-group rules, and a reference matcher.

/// Why a subject, filter or queue name is refused. Every message contains
/// "invalid subject", as protocol.md requires of the ERROR reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("invalid subject: empty")]
    Empty,
    #[error("invalid subject: longer than {0} bytes")]
    TooLong(usize),
    #[error("invalid subject: empty token")]
    EmptyToken,
    #[error("invalid subject: not UTF-8")]
    NotUtf8,
    #[error("invalid subject: whitespace or control character")]
    BadCharacter,
    #[error("invalid subject: wildcard in a subject")]
    Wildcard,
    #[error("invalid subject: '>' must be the last token")]
    TailNotLast,
    #[error("invalid subject: a queue group name is a single token")]
    QueueNotToken,
}

/// True for a byte that may never appear in a token (ASCII fast path).
fn bad_ascii(byte: u8) -> bool {
    byte <= b' ' || byte == 0x7f
}

/// Checks the bytes of a token: UTF-8 without whitespace or control characters.
fn check_token_chars(token: &[u8]) -> Result<(), SubjectError> {
    if token.is_ascii() {
        return if token.iter().any(|&b| bad_ascii(b)) {
            Err(SubjectError::BadCharacter)
        } else {
            Ok(())
        };
    }
    let text = std::str::from_utf8(token).map_err(|_| SubjectError::NotUtf8)?;
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SubjectError::BadCharacter);
    }
    Ok(())
}

fn check_length(bytes: &[u8], max_len: usize) -> Result<(), SubjectError> {
    if bytes.is_empty() {
        return Err(SubjectError::Empty);
    }
    if bytes.len() > max_len {
        return Err(SubjectError::TooLong(max_len));
    }
    Ok(())
}

/// A PUBLISH subject or reply subject: no wildcard tokens.
pub fn validate_subject(subject: &[u8], max_len: usize) -> Result<(), SubjectError> {
    check_length(subject, max_len)?;
    // Every PUBLISH comes here: ASCII subjects take one pass over the bytes.
    ascii_subject(subject).unwrap_or_else(|| subject_tokens(subject))
}

/// [`validate_subject`]'s answer for an ASCII subject, in one pass; None at
/// the first non-ASCII byte (the UTF-8 rules of [`subject_tokens`] apply).
#[inline]
fn ascii_subject(subject: &[u8]) -> Option<Result<(), SubjectError>> {
    let token_ok = |token: &[u8]| match token {
        [] => Err(SubjectError::EmptyToken),
        b"*" | b">" => Err(SubjectError::Wildcard),
        _ => Ok(()),
    };
    let mut start = 0;
    for (at, &byte) in subject.iter().enumerate() {
        if byte == b'.' {
            if let Err(error) = token_ok(&subject[start..at]) {
                return Some(Err(error));
            }
            start = at + 1;
        } else if byte >= 0x80 {
            return None;
        } else if bad_ascii(byte) {
            // A token that is not UTF-8 is refused as such, whatever else
            // is wrong with it.
            let rest = &subject[at..];
            let token = &rest[..rest.iter().position(|&b| b == b'.').unwrap_or(rest.len())];
            if token.iter().any(|&b| b >= 0x80) {
                return None;
            }
            return Some(Err(SubjectError::BadCharacter));
        }
    }
    Some(token_ok(&subject[start..]))
}

/// [`validate_subject`] token by token, for any UTF-8.
fn subject_tokens(subject: &[u8]) -> Result<(), SubjectError> {
    for token in subject.split(|&b| b == b'.') {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        if token == b"*" || token == b">" {
            return Err(SubjectError::Wildcard);
        }
        check_token_chars(token)?;
    }
    Ok(())
}

/// A SUBSCRIBE filter: `*` tokens anywhere, a `>` token only last.
pub fn validate_filter(filter: &[u8], max_len: usize) -> Result<(), SubjectError> {
    check_length(filter, max_len)?;
    let mut tokens = filter.split(|&b| b == b'.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        if token == b">" && tokens.peek().is_some() {
            return Err(SubjectError::TailNotLast);
        }
        check_token_chars(token)?;
    }
    Ok(())
}

/// A queue group name follows the rules of a single token.
pub fn validate_queue(queue: &[u8], max_len: usize) -> Result<(), SubjectError> {
    check_length(queue, max_len)?;
    if queue.contains(&b'.') {
        return Err(SubjectError::QueueNotToken);
    }
    check_token_chars(queue)
}

/// Does `filter` match the literal `subject`? The reference matcher: simple
/// and obviously right; the broker's index is tested against it.
pub fn filter_matches(filter: &[u8], subject: &[u8]) -> bool {
    let mut filter_tokens = filter.split(|&b| b == b'.');
    let mut subject_tokens = subject.split(|&b| b == b'.');
    loop {
        match (filter_tokens.next(), subject_tokens.next()) {
            (Some(b">"), Some(_)) => return filter_tokens.next().is_none(),
            (Some(b"*"), Some(_)) => {}
            (Some(f), Some(s)) if f == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does `filter` match every subject that `narrower` matches? (`a.>`
/// covers `a.*` and `a.b.>`; `a.*` covers `a.b` but not `a.>`.) For
/// subscription permissions, where a wildcard subscription is allowed only
/// inside an allowed filter.
pub fn filter_covers(filter: &[u8], narrower: &[u8]) -> bool {
    let mut filter_tokens = filter.split(|&b| b == b'.');
    let mut narrower_tokens = narrower.split(|&b| b == b'.');
    loop {
        match (filter_tokens.next(), narrower_tokens.next()) {
            (Some(b">"), Some(_)) => return filter_tokens.next().is_none(),
            (Some(b"*"), Some(token)) if token != b">" => {}
            (Some(f), Some(n)) if f == n && f != b"*" && f != b">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ascii_subject, filter_covers, filter_matches, subject_tokens};

    #[test]
    fn a_filter_covers_what_is_inside_it() {
        for (filter, narrower) in [
            ("a.>", "a.*"),
            ("a.>", "a.b.>"),
            ("a.>", "a.b"),
            (">", ">"),
            (">", "*.b"),
            ("a.*", "a.*"),
            ("a.*", "a.b"),
            ("a.b", "a.b"),
            ("*.b", "a.b"),
        ] {
            assert!(
                filter_covers(filter.as_bytes(), narrower.as_bytes()),
                "{filter} covers {narrower}"
            );
        }
        for (filter, narrower) in [
            ("a.*", "a.>"),
            ("a.b", "a.*"),
            ("a.b", "a.>"),
            ("a.>", "a"),
            ("a.>", ">"),
            ("a.*", "a.b.c"),
            ("a.b", "a"),
            ("*", ">"),
        ] {
            assert!(
                !filter_covers(filter.as_bytes(), narrower.as_bytes()),
                "{filter} does not cover {narrower}"
            );
        }
        // On literal subjects, covering is matching.
        for (filter, subject) in [
            ("a.*", "a.b"),
            ("a.>", "a.b.c"),
            ("a.b", "a.c"),
            ("a.>", "a"),
        ] {
            assert_eq!(
                filter_covers(filter.as_bytes(), subject.as_bytes()),
                filter_matches(filter.as_bytes(), subject.as_bytes())
            );
        }
    }

    /// Every string of up to 5 bytes over an alphabet with each case: the
    /// one-pass ASCII check gives the token-by-token answer, error and all.
    #[test]
    fn the_ascii_pass_agrees_with_the_token_rules() {
        let alphabet = [b'a', b'.', b'*', b'>', b' ', 0x7f, 0xc3];
        let mut input = Vec::new();
        let mut checked = 0;
        for len in 0..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                input.clear();
                for _ in 0..len {
                    input.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                if let Some(fast) = ascii_subject(&input) {
                    assert_eq!(fast, subject_tokens(&input), "{input:?}");
                    checked += 1;
                } else {
                    assert!(input.iter().any(|&b| b >= 0x80), "{input:?}");
                }
            }
        }
        assert!(checked > 5000);
    }
}
