//! Deterministic tweet-shaped records (`GET /tweets.ndjson?rows=N`, `demo-api --dump-tweets N`):
//! nested as real API records are, for the nested-data tests and benchmarks. Each holds a
//! `user` object, `entities` with arrays of objects (`hashtags`, `user_mentions`, `urls`),
//! each element with an array of two integers (`indices`), and a few nullable fields.
//! Tweet `i` is always the same.

use std::io::Write as _;

use super::{WORDS, mix, words};

const LANGS: [&str; 5] = ["en", "ja", "fr", "de", "es"];
const SOURCES: [&str; 3] = [
    "Twitter Web App",
    "Twitter for iPhone",
    "Twitter for Android",
];

/// Writes tweet `i` (1-based) as one JSON object.
pub(crate) fn write_tweet(i: u64, out: &mut Vec<u8>) {
    let h = mix(i);
    let g = mix(h);
    let id = 1_700_000_000_000_000_000 + i;
    // Spread over 2024, in Twitter's own date format (which is not RFC 3339: it stays text).
    let at = chrono::DateTime::from_timestamp(1_704_067_200 + ((i * 17) % 31_536_000) as i64, 0)
        .unwrap_or_default();
    let _ = write!(
        out,
        "{{\"created_at\":\"{}\",\"id\":{id},\"id_str\":\"{id}\",\"text\":\"",
        at.format("%a %b %d %H:%M:%S +0000 %Y")
    );
    words(out, g, 40 + (h % 100) as usize);
    let _ = write!(
        out,
        "\",\"truncated\":false,\"source\":\"<a href=\\\"https://example.com\\\" rel=\\\"nofollow\\\">{}</a>\"",
        SOURCES[(h % 3) as usize]
    );
    if h % 4 == 0 {
        let _ = write!(
            out,
            ",\"in_reply_to_status_id\":{},\"in_reply_to_screen_name\":\"user{}\"",
            id - 1 - h % 1000,
            g % 50_000
        );
    } else {
        out.extend_from_slice(b",\"in_reply_to_status_id\":null,\"in_reply_to_screen_name\":null");
    }
    user(g, out);
    entities(h, g, out);
    let _ = write!(
        out,
        ",\"retweet_count\":{},\"favorite_count\":{},\"favorited\":false,\"retweeted\":{},\"lang\":\"{}\"}}",
        h % 5000,
        g % 20_000,
        g % 7 == 0,
        LANGS[(g % 5) as usize]
    );
}

/// The author: one of 50,000 users, always the same for the same user.
fn user(g: u64, out: &mut Vec<u8>) {
    let uid = g % 50_000;
    let u = mix(uid);
    let _ = write!(
        out,
        ",\"user\":{{\"id\":{uid},\"id_str\":\"{uid}\",\"name\":\"{} {}\",\"screen_name\":\"user{uid}\",\
         \"location\":{},\"followers_count\":{},\"friends_count\":{},\"verified\":{},\
         \"created_at\":\"2015-0{}-1{}T08:30:00Z\"}}",
        WORDS[(u % 16) as usize],
        WORDS[(u >> 8) as usize % 16],
        if u % 3 == 0 {
            "null".to_string()
        } else {
            format!("\"{}\"", WORDS[(u >> 16) as usize % 16])
        },
        u % 1_000_000,
        (u >> 20) % 5000,
        u % 50 == 0,
        1 + u % 9,
        u % 10
    );
}

/// Hashtags, mentions and links, 0 to 3 of each, each with its `indices` in the text.
fn entities(h: u64, g: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"entities\":{\"hashtags\":[");
    for k in 0..h % 4 {
        if k > 0 {
            out.push(b',');
        }
        let at = 10 * k + h % 7;
        let tag = WORDS[((h >> (4 * k)) % 16) as usize];
        let _ = write!(
            out,
            "{{\"text\":\"{tag}\",\"indices\":[{at},{}]}}",
            at + 1 + tag.chars().count() as u64
        );
    }
    out.extend_from_slice(b"],\"user_mentions\":[");
    for k in 0..g % 3 {
        if k > 0 {
            out.push(b',');
        }
        let who = mix(g + k) % 50_000;
        let _ = write!(
            out,
            "{{\"screen_name\":\"user{who}\",\"id\":{who},\"id_str\":\"{who}\",\"indices\":[{},{}]}}",
            k * 12,
            k * 12 + 9
        );
    }
    out.extend_from_slice(b"],\"urls\":[");
    for k in 0..(h >> 8) % 3 {
        if k > 0 {
            out.push(b',');
        }
        let page = mix(h + k) % 100_000;
        let _ = write!(
            out,
            "{{\"url\":\"https://t.co/{page:x}\",\"expanded_url\":\"https://example.com/articles/{page}?ref=tw\",\
             \"display_url\":\"example.com/articles/{page}…\",\"indices\":[{},{}]}}",
            60 + k * 24,
            83 + k * 24
        );
    }
    out.extend_from_slice(b"]}");
}

/// Writes tweets `1..=rows` as NDJSON.
///
/// # Errors
/// The writer fails.
pub(crate) fn dump(rows: u64, out: &mut impl std::io::Write) -> std::io::Result<()> {
    super::dump_records(rows, out, write_tweet)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tweets_are_json_objects_and_always_the_same() {
        let mut a = Vec::new();
        super::dump(500, &mut a).unwrap();
        let mut b = Vec::new();
        super::dump(500, &mut b).unwrap();
        assert_eq!(a, b);
        let mut arrays = 0;
        for line in a.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert!(v["user"]["screen_name"].is_string());
            arrays += v["entities"]["hashtags"].as_array().unwrap().len();
            for url in v["entities"]["urls"].as_array().unwrap() {
                assert_eq!(url["indices"].as_array().unwrap().len(), 2);
            }
        }
        assert!(arrays > 500, "{arrays} hashtags");
    }
}
