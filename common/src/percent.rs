//! URL escapes, for query values and path segments: the agent's sidecar routes, the
//! collector's `PutAuditEvents` query and the console's filters. `%XX` is decoded, an escape
//! that is not one (`%zz`, a lone `%`) stays as it is, and bytes that are not UTF-8 once
//! decoded become U+FFFD.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What [`encode`] leaves as it is besides letters and digits: RFC 3986's unreserved marks.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Decodes a path segment (`+` stays `+`).
pub fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Decodes a query value (`+` is a space, as forms send it; `%2B` is a `+`).
pub fn decode_query(s: &str) -> String {
    decode(&s.replace('+', " "))
}

/// Encodes everything but letters, digits and `-_.~`.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip_and_bad_ones_stay() {
        assert_eq!(decode_query("a+b%2Fc%zz%4"), "a b/c%zz%4");
        assert_eq!(decode("a+b%2Fc"), "a+b/c");
        assert_eq!(decode_query("%2B"), "+");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%ff"), "\u{fffd}");
        let raw = "arn:aws:cloudtrail:us-east-1:123456789012:channel/x y+z~é";
        assert_eq!(
            encode(raw),
            "arn%3Aaws%3Acloudtrail%3Aus-east-1%3A123456789012%3Achannel%2Fx%20y%2Bz~%C3%A9"
        );
        assert_eq!(decode(&encode(raw)), raw);
    }
}
