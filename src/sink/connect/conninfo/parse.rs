//! Reading a connection string into keyword/value pairs, as libpq's parser reads it: the
//! `key=value` form, and the `postgres://` URI with libpq's own rules (credentials end at
//! the first `@`, hosts are comma-separated, IPv6 addresses in brackets, percent-decoding
//! that refuses `%00` and a malformed `%XX`, query parameters with exactly one `=`).

use super::ConninfoError;

/// The keyword/value pairs of a connection string, in order: a `postgres://` or
/// `postgresql://` URI, or libpq's `key=value` form (values may be single-quoted, with `\'`
/// and `\\` escapes).
///
/// # Errors
/// A string neither form can read, in libpq's words.
pub(crate) fn parse(conninfo: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = conninfo.strip_prefix(scheme) {
            return parse_uri(conninfo, rest);
        }
    }
    parse_keywords(conninfo)
}

fn syntax(message: String) -> ConninfoError {
    ConninfoError::Syntax(message)
}

fn parse_keywords(text: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    let skip_blanks = |chars: &mut Chars| while chars.next_if(|c| c.is_whitespace()).is_some() {};
    loop {
        skip_blanks(&mut chars);
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_blanks(&mut chars);
        if chars.next() != Some('=') {
            return Err(syntax(format!(
                "missing \"=\" after {key:?} in connection info string"
            )));
        }
        skip_blanks(&mut chars);
        let value = if chars.next_if_eq(&'\'').is_some() {
            quoted(&mut chars).ok_or_else(|| {
                syntax("unterminated quoted string in connection info string".into())
            })?
        } else {
            unquoted(&mut chars)
        };
        pairs.push((key, value));
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// A value after its opening quote, up to the closing one; `\` escapes the next character.
fn quoted(chars: &mut Chars) -> Option<String> {
    let mut value = String::new();
    loop {
        match chars.next()? {
            '\\' => value.push(chars.next()?),
            '\'' => return Some(value),
            c => value.push(c),
        }
    }
}

/// A value up to the next blank; `\` escapes the next character.
fn unquoted(chars: &mut Chars) -> String {
    let mut value = String::new();
    while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
        match c {
            '\\' => value.extend(chars.next()),
            c => value.push(c),
        }
    }
    value
}

/// `[user[:password]@][host[:port][,…]][/dbname][?key=value&…]`, with libpq's rules.
fn parse_uri(whole: &str, rest: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut pairs = Vec::new();
    // Credentials run to the first '@' before any '/'.
    let credentials_end = rest
        .find(['@', '/'])
        .filter(|&at| rest[at..].starts_with('@'));
    let mut rest = match credentials_end {
        Some(at) => {
            let (user, password) = match rest[..at].split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (&rest[..at], None),
            };
            if !user.is_empty() {
                pairs.push(("user".into(), decode(user)?));
            }
            if let Some(password) = password.filter(|p| !p.is_empty()) {
                pairs.push(("password".into(), decode(password)?));
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    let terminator = loop {
        let (host, after) = uri_host(whole, rest)?;
        hosts.push(host);
        rest = after;
        let mut next = rest.chars().next();
        if next == Some(':') {
            let end = rest[1..]
                .find(['/', '?', ','])
                .map_or(rest.len(), |i| i + 1);
            ports.push(&rest[1..end]);
            rest = &rest[end..];
            next = rest.chars().next();
        } else {
            ports.push("");
        }
        if next != Some(',') {
            break next;
        }
        rest = &rest[1..];
    };
    // As libpq, a list that comes out empty (`postgres://:/`) is not given at all.
    for (keyword, list) in [("host", hosts.join(",")), ("port", ports.join(","))] {
        if !list.is_empty() {
            pairs.push((keyword.into(), decode(&list)?));
        }
    }
    let mut query = None;
    match terminator {
        Some('/') => {
            let (dbname, after) = rest[1..]
                .split_once('?')
                .map_or((&rest[1..], None), |(d, q)| (d, Some(q)));
            // An empty dbname is left unset, so that PGDATABASE still applies.
            if !dbname.is_empty() {
                pairs.push(("dbname".into(), decode(dbname)?));
            }
            query = after;
        }
        Some('?') => query = Some(&rest[1..]),
        _ => {}
    }
    if let Some(query) = query {
        uri_params(query, &mut pairs)?;
    }
    Ok(pairs)
}

/// One host of a URI's list, and what follows it.
fn uri_host<'a>(whole: &str, rest: &'a str) -> Result<(&'a str, &'a str), ConninfoError> {
    if let Some(v6) = rest.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| {
            syntax(format!(
                "end of string reached when looking for matching \"]\" in IPv6 host address in URI: {whole:?}"
            ))
        })?;
        if end == 0 {
            return Err(syntax(format!(
                "IPv6 host address may not be empty in URI: {whole:?}"
            )));
        }
        let after = &v6[end + 1..];
        if let Some(c) = after
            .chars()
            .next()
            .filter(|c| !matches!(c, ':' | '/' | '?' | ','))
        {
            let position = whole.len() - after.len() + 1;
            return Err(syntax(format!(
                "unexpected character {c:?} at position {position} in URI (expected \":\" or \"/\"): {whole:?}"
            )));
        }
        return Ok((&v6[..end], after));
    }
    let end = rest.find([':', '/', '?', ',']).unwrap_or(rest.len());
    Ok(rest.split_at(end))
}

/// `key=value&…`: each parameter has exactly one `=`; `ssl=true` is `sslmode=require`.
fn uri_params(query: &str, pairs: &mut Vec<(String, String)>) -> Result<(), ConninfoError> {
    let mut params: Vec<&str> = query.split('&').collect();
    // A trailing '&' ends the list; an empty parameter elsewhere lacks its '='.
    if params.last() == Some(&"") {
        params.pop();
    }
    for param in params {
        let mut parts = param.splitn(3, '=');
        let key = parts.next().unwrap_or_default();
        let Some(value) = parts.next() else {
            return Err(syntax(format!(
                "missing key/value separator \"=\" in URI query parameter: {key:?}"
            )));
        };
        if parts.next().is_some() {
            return Err(syntax(format!(
                "extra key/value separator \"=\" in URI query parameter: {key:?}"
            )));
        }
        let (key, value) = (decode(key)?, decode(value)?);
        if key == "ssl" && value == "true" {
            pairs.push(("sslmode".into(), "require".into()));
        } else {
            pairs.push((key, value));
        }
    }
    Ok(())
}

/// Percent-decoding as libpq's: `%` must be followed by two hex digits, and `%00` is refused.
fn decode(text: &str) -> Result<String, ConninfoError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(syntax(format!("invalid percent-encoded token: {text:?}")));
        };
        let byte = (hi * 16 + lo) as u8;
        if byte == 0 {
            return Err(syntax(format!(
                "forbidden value %00 in percent-encoded value: {text:?}"
            )));
        }
        out.push(byte);
        i += 3;
    }
    String::from_utf8(out)
        .map_err(|_| syntax(format!("percent-encoded value is not UTF-8: {text:?}")))
}
