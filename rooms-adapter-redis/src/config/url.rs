//! Redis URLs: parsing ([`parse_url`], errors name the URL) and masking
//! their secrets ([`redact_url`]), for logs, errors and `Debug` output.

use rooms_adapter::Error;

/// Query parameters whose value is a secret (compared without regard to case).
const SECRET_PARAMS: [&str; 3] = ["password", "pass", "passwd"];

/// What replaces a secret.
const MASK: &str = "***";

/// The URL with every password masked as `***`: the password in the userinfo
/// (`redis://user:***@host`), a userinfo without a colon as a whole
/// (`redis://***@host`), and the value of `password=`, `pass=` and `passwd=`
/// query parameters. Everything else is kept. Never panics; any input is
/// accepted, including text that is not a URL (which is masked by the same
/// rules, as if it followed `scheme://`).
///
/// [`redact_url`] masks every part of a URL that can hold a secret, and is
/// meant for text that people or log collectors see: an error naming a URL, a
/// start-up line, a `Debug` impl. It never fails and never panics, whatever the
/// input: a URL too malformed for redis-rs to parse is exactly the one an error
/// message shows, so it is masked just the same.
///
/// What is masked (each becomes `***`):
///
/// - the password of `scheme://user:password@host`, and the whole userinfo of
///   `scheme://secret@host` (redis-rs reads a lone userinfo as a user name,
///   other clients as a password: it is masked either way);
/// - the value of a `password=`, `pass=` or `passwd=` query parameter (names
///   matched without regard to case), up to the next `&`;
/// - a password that contains `/`, `?`, `#`, `@` or `:` unencoded: the userinfo
///   runs to the **last** `@` before the query's secrets, so nothing of such a
///   password is left visible.
///
/// The scheme, user name, host, port, database and other query parameters are
/// kept, so the text still says which server is meant.
///
/// ```
/// use rooms_adapter_redis::redact_url;
///
/// assert_eq!(redact_url("redis://user:hunter2@cache:6379/0"), "redis://user:***@cache:6379/0");
/// assert_eq!(redact_url("redis://hunter2@cache"), "redis://***@cache");
/// assert_eq!(redact_url("redis://:p/a#s@s@cache"), "redis://:***@cache");
/// assert_eq!(
///     redact_url("redis+unix:///run/redis.sock?db=1&pass=hunter2"),
///     "redis+unix:///run/redis.sock?db=1&pass=***"
/// );
/// // Nothing secret: unchanged.
/// assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(end) => url.split_at(end + 3),
        None => ("", url),
    };
    let first_secret_param = secret_params(rest).first().map(|&(start, _)| start);
    // The userinfo ends at the last `@` before any secret query parameter, so
    // that a password with `/`, `?`, `#` or `@` in it is masked in full.
    let userinfo_limit = first_secret_param.unwrap_or(rest.len());
    let (userinfo, after) = match rest[..userinfo_limit].rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at..]),
        None => (None, rest),
    };

    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _password)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            None if userinfo.is_empty() => {}
            None => out.push_str(MASK),
        }
    }
    // Mask the values of secret parameters in what follows the userinfo.
    let mut copied = 0;
    for (value_start, value_end) in secret_params(after) {
        out.push_str(&after[copied..value_start]);
        out.push_str(MASK);
        copied = value_end;
    }
    out.push_str(&after[copied..]);
    out
}

/// The byte ranges of the values of secret query parameters in `text`: after
/// `?name=` or `&name=` (name matched without regard to case), up to the next
/// `&` or the end (a `#` does not end it, so a password containing one is
/// masked in full). Sorted, not overlapping.
fn secret_params(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let mut position = 0;
    while let Some(offset) = bytes[position..]
        .iter()
        .position(|&byte| byte == b'?' || byte == b'&')
    {
        let name_start = position + offset + 1;
        position = name_start;
        let Some(equals) = bytes[name_start..].iter().position(|&byte| byte == b'=') else {
            break;
        };
        let name = &bytes[name_start..name_start + equals];
        if !SECRET_PARAMS
            .iter()
            .any(|secret| name.eq_ignore_ascii_case(secret.as_bytes()))
        {
            continue;
        }
        let value_start = name_start + equals + 1;
        let value_end = bytes[value_start..]
            .iter()
            .position(|&byte| byte == b'&')
            .map_or(bytes.len(), |length| value_start + length);
        ranges.push((value_start, value_end));
        position = value_end;
    }
    ranges
}

/// Parses a Redis URL into a client, with errors that name the URL (password
/// masked) and the reason.
pub(crate) fn parse_url(url: &str) -> Result<redis::Client, Error> {
    let shown = redact_url(url);
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys") => {}
        Some(other) => {
            return Err(Error::Config(format!(
                "invalid redis URL {shown:?}: unsupported scheme {other:?} \
                 (expected redis://, rediss:// or redis+unix://)"
            )));
        }
        None => {
            return Err(Error::Config(format!(
                "invalid redis URL {shown:?}: missing scheme (expected e.g. redis://127.0.0.1:6379)"
            )));
        }
    }
    if cfg!(not(feature = "tls")) && matches!(scheme, Some("rediss" | "valkeys")) {
        return Err(Error::Config(format!(
            "invalid redis URL {shown:?}: TLS (rediss://) needs the `tls` feature of rooms-adapter-redis"
        )));
    }
    redis::Client::open(url)
        .map_err(|error| Error::Config(format!("invalid redis URL {shown:?}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::{parse_url, redact_url};

    #[test]
    fn user_and_password() {
        assert_eq!(
            redact_url("redis://user:hunter2@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://u:p@h"), "rediss://u:***@h");
    }

    #[test]
    fn password_only_userinfo() {
        assert_eq!(redact_url("redis://:hunter2@host:1"), "redis://:***@host:1");
        // A lone userinfo is a password to some clients: masked whole.
        assert_eq!(redact_url("redis://hunter2@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis://hunter2@host:1/2"),
            "redis://***@host:1/2"
        );
    }

    #[test]
    fn passwords_with_delimiters() {
        for (url, expected) in [
            (
                "redis://user:hun/ter2@host:1/0",
                "redis://user:***@host:1/0",
            ),
            ("redis://user:hun#ter2@host", "redis://user:***@host"),
            ("redis://user:hun@ter2@host", "redis://user:***@host"),
            ("redis://user:hun?ter2@host", "redis://user:***@host"),
            ("redis://user:hun:ter2@host", "redis://user:***@host"),
            ("redis://:a/b#c@d@host:1", "redis://:***@host:1"),
            ("redis://hun/ter#2@host", "redis://***@host"),
            ("redis://user:hun%2Fter2@host", "redis://user:***@host"),
        ] {
            let shown = redact_url(url);
            assert_eq!(shown, expected, "{url}");
            assert!(!shown.contains("ter"), "{url} -> {shown}");
        }
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            redact_url("redis://host:1/0?password=hunter2"),
            "redis://host:1/0?password=***"
        );
        assert_eq!(
            redact_url("redis://host?db=1&pass=hunter2&protocol=resp3"),
            "redis://host?db=1&pass=***&protocol=resp3"
        );
        assert_eq!(
            redact_url("unix:///tmp/r.sock?PassWord=a#b@c&db=2"),
            "unix:///tmp/r.sock?PassWord=***&db=2"
        );
        assert_eq!(
            redact_url("redis://u:p@host/0?passwd=x@y&pass=z"),
            "redis://u:***@host/0?passwd=***&pass=***"
        );
        // Not secret: kept.
        assert_eq!(
            redact_url("redis://host/0?user=ada&passive=1&pass"),
            "redis://host/0?user=ada&passive=1&pass"
        );
        assert_eq!(redact_url("redis://h?pass="), "redis://h?pass=***");
    }

    #[test]
    fn nothing_to_mask() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379/0",
            "redis+unix:///run/redis.sock",
            "redis://[::1]:6379",
            "",
            "nope",
            "://",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn malformed_input_never_panics_and_stays_masked() {
        assert_eq!(redact_url("user:hunter2@host"), "user:***@host");
        assert_eq!(redact_url("@"), "@");
        assert_eq!(redact_url("redis://@"), "redis://@");
        assert_eq!(redact_url("redis://:@"), "redis://:***@");
        assert_eq!(redact_url("?&=&pass=&&"), "?&=&pass=***&&");
        assert_eq!(
            redact_url("redis://é:ü@ö?pass=ß"),
            "redis://é:***@ö?pass=***"
        );
        // Every prefix of a tricky URL, cut anywhere (also inside a multi-byte
        // character, as text is always valid UTF-8 here).
        let tricky = "rediss://ü:p/w#d@h?pass=x&PASSWORD=y@z#f";
        for (index, _) in tricky.char_indices() {
            let _ = redact_url(&tricky[..index]);
            let _ = redact_url(&tricky[index..]);
        }
        let shown = redact_url(tricky);
        assert_eq!(shown, "rediss://ü:***@h?pass=***&PASSWORD=***");
    }

    #[test]
    fn parse_errors_mask_the_password() {
        for url in [
            "http://u:hunter2@h",
            "redis://u:hun/ter2@h:notaport",
            "u:hunter2@h",
        ] {
            let error = parse_url(url).err().map(|error| error.to_string());
            let error = error.unwrap_or_default();
            assert!(!error.is_empty(), "{url} is rejected");
            assert!(
                !error.contains("hunter2") && !error.contains("ter2"),
                "{error}"
            );
        }
    }
}
